"""The paper's behavioural claims, judged on one profile's quality rows.

Each claim compares FIDs. A difference counts when it exceeds 1.96 standard errors, the
standard error of each FID being its bootstrap one (evaluate.bootstrap; the rows carry
FID +- 1.96 SE as fid_ci_low/high) and those of a difference adding in quadrature. The
configurations share their sampling seed, so their errors correlate positively and this
test is conservative. A claim is `reproduced` when every comparison it makes goes its way
significantly, `not reproduced` when one goes the other way significantly, and
`inconclusive` otherwise (or without intervals).

A training with seed replicas (train.replica_seeds: `progressive_d6`, `progressive_d6_s1`,
...) enters a comparison as the mean FID over its seeds, with a standard error that
includes the seed-to-seed spread: the standard deviation of that mean under a two-level
bootstrap, seeds drawn with replacement and each drawn seed's FID then drawn from its
sampling distribution N(FID, SE). With one seed it is the sampling SE alone. With few
seeds a bootstrap underestimates the spread between them (by (S-1)/S in variance), so
three seeds make a claim firmer, not certain.

    variant findings --profile small --quality results/small/quality.parquet --out results/small/findings.md
    variant findings --profile small_hard_d24 --claims table1 \
        --quality results/small_hard_d24/metrics/pretrained/*.parquet --out results/small_hard_d24/findings_table1.md
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from variant import dag, names
from variant.config import load_params
from variant.options import params_options
from variant.util.atomic import write_text
from variant.util.files import require_file

Z = 1.96
SIGN = {1: "+", -1: "-", 0: "0"}
SEED_RESAMPLES = 4000


def seeds_se(values: np.ndarray, ses: np.ndarray, resamples: int = SEED_RESAMPLES) -> float:
    """Standard error of the mean FID over seeds: the two-level bootstrap of the module
    docstring (seeds with replacement, then each seed's sampling noise). Fixed RNG: the
    same rows give the same verdicts."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(values), (resamples, len(values)))
    draws = values[idx] + ses[idx] * rng.standard_normal(idx.shape)
    return float(draws.mean(axis=1).std(ddof=1))


@dataclass
class FID:
    value: float
    se: float       # NaN without a bootstrap interval
    seeds: int = 1  # trainings averaged (seed replicas)

    @classmethod
    def of(cls, quality: pd.DataFrame, run: str, config: str) -> "FID | None":
        """`run` at `config`; a training's seed replicas averaged (the `family` column of
        with_families)."""
        rows = quality[(quality["family"] == run) & (quality["config"] == config)]
        if rows.empty:
            return None
        values = rows["fid"].to_numpy(float)
        lo = rows.get("fid_ci_low", pd.Series(math.nan, index=rows.index)).to_numpy(float)
        hi = rows.get("fid_ci_high", pd.Series(math.nan, index=rows.index)).to_numpy(float)
        ses = (hi - lo) / (2 * Z)
        if len(rows) == 1:
            return cls(float(values[0]), float(ses[0]))
        se = math.nan if np.isnan(ses).any() else seeds_se(values, ses)
        return cls(float(values.mean()), se, len(rows))

    def __str__(self):
        return (f"{self.value:.2f}" + ("" if math.isnan(self.se) else f" ± {Z * self.se:.2f}")
                + (f" ({self.seeds} seeds)" if self.seeds > 1 else ""))


def gain(worse: FID, better: FID) -> FID:
    """How much lower `better` is than `worse` (positive: the claim's direction); the
    trainings differ, so their errors add in quadrature."""
    return FID(worse.value - better.value, math.hypot(worse.se, better.se), min(worse.seeds, better.seeds))


def direction(g: FID) -> int:
    """+1: significantly in the claim's direction, -1: significantly against, 0: neither."""
    if math.isnan(g.se) or abs(g.value) <= Z * g.se:
        return 0
    return 1 if g.value > 0 else -1


def verdict(gains: list[FID]) -> str:
    if not gains:
        return "inconclusive (no rows)"
    dirs = [direction(g) for g in gains]
    if any(math.isnan(g.se) for g in gains):
        return "inconclusive (no bootstrap intervals: set evaluate.bootstrap)"
    if -1 in dirs:
        return "not reproduced"
    return "reproduced" if all(d == 1 for d in dirs) else "inconclusive"


# The claims in the order `claims` judges them, by the name `--claims` selects them with.
CLAIMS = ("table1", "fig2a", "depth", "bridge", "diminishing")


def _claim(title: str, statement: str, lines: list[tuple[str, FID | None, FID | None]]) -> dict:
    """lines: (what is compared, the configuration the claim says is worse, the better one)."""
    rows, gains = [], []
    for what, worse, better in lines:
        if worse is None or better is None:
            rows.append(f"| {what} | {worse or 'not run'} | {better or 'not run'} | | |")
            continue
        g = gain(worse, better)
        gains.append(g)
        rows.append(f"| {what} | {worse} | {better} | {g} | {SIGN[direction(g)]} |")
    if not lines:
        return {"title": title, "statement": statement, "rows": rows,
                "verdict": "inconclusive (the grid has no configurations to compare)"}
    return {"title": title, "statement": statement, "verdict": verdict(gains) if len(gains) == len(lines)
            else "inconclusive (configurations not run)", "rows": rows}


def with_families(quality: pd.DataFrame) -> pd.DataFrame:
    """The rows with a `family` column: the run a seed replica replicates (names.Run.family)."""
    return quality.assign(family=quality["run"].map(lambda r: names.parse_run(r).family))


def claims(P: dict, quality: pd.DataFrame) -> list[dict]:
    quality = with_families(quality)
    q = lambda run, cfg: FID.of(quality, run, cfg)   # noqa: E731
    D, N0, out = dag.depth(P), P["train"]["bridge"], []

    early, mid, late = dag.table1_configs(P)
    out.append(_claim("Table 1: early scales need depth, late scales do not",
                      f"The training-free d={P['sample']['table1_depth']} subnet of the pre-trained "
                      f"VAR-d{D} costs less FID on the late scales than on the early or middle ones.",
                      [("early vs late scales", q(names.PRETRAINED, early), q(names.PRETRAINED, late)),
                       ("middle vs late scales", q(names.PRETRAINED, mid), q(names.PRETRAINED, late))]))

    fd = P["train"]["fixed_ratios"]["depth"]
    prog = names.progressive(fd)
    lines = []
    for p in P["train"]["fixed_ratios"]["p"]:
        run = names.fixed_ratio(p, fd)
        lines.append((f"p={p}, full network", q(run, "full"), q(prog, "full")))
        lines.append((f"p={p}, d={fd} subnet (N={N0})", q(run, dag.grid_config(P, fd, N0)),
                      q(prog, dag.grid_config(P, fd, N0))))
    out.append(_claim("Figure 2a: progressive training beats every fixed ratio on both objectives",
                      f"`{prog}` has a lower full-network FID and a lower subnet FID than each fixed "
                      f"subnet-sampling ratio p.", lines))

    # N = K runs every scale at full depth: the full network, the same for every d
    depths = sorted(P["train"]["subnet_depths"])
    bridges = [n for n in P["sample"]["bridges"] if n < dag.num_scales(P)]
    lines = [(f"N={n}: d={a} vs d={b}", q(names.progressive(a), dag.grid_config(P, a, n)),
              q(names.progressive(b), dag.grid_config(P, b, n)))
             for n in bridges for a, b in zip(depths, depths[1:])]
    out.append(_claim("Table 8: quality grows with the subnet depth d",
                      "At every N, the deeper supernet's subnet has the lower FID.", lines))
    lines = [(f"d={d}: N={bridges[0]} vs N={bridges[-1]}", q(names.progressive(d), dag.grid_config(P, d, bridges[0])),
              q(names.progressive(d), dag.grid_config(P, d, bridges[-1]))) if len(bridges) > 1
             else (f"d={d}: needs two values of N in sample.bridges", None, None) for d in depths]
    out.append(_claim("Table 8: quality grows with the bridge N",
                      "For every d, the largest N of sample.bridges has a lower FID than the smallest.",
                      lines))
    lines = []
    for d in depths:
        f = [q(names.progressive(d), dag.grid_config(P, d, n)) for n in bridges]
        if None in f or len(f) < 3:
            lines.append((f"d={d}" + ("" if len(f) > 2 else ": needs three values of N in sample.bridges"),
                          None, None))
            continue
        first, last = gain(f[0], f[1]), gain(f[-2], f[-1])
        # the first step of N gains more than the last: (first - last) > 0
        lines.append((f"d={d}: gain N={bridges[0]}->{bridges[1]} vs N={bridges[-2]}->{bridges[-1]}", first, last))
    out.append(_claim("Table 8: diminishing returns in N",
                      "The first added bridge scale lowers FID by more than the last one "
                      "(the columns here are the two gains, not FIDs).", lines))
    return [dict(c, key=key) for key, c in zip(CLAIMS, out, strict=True)]


def render(P: dict, quality: pd.DataFrame, only: list[str] | None = None) -> str:
    """The Markdown of every claim, or of the claims named in `only` (CLAIMS)."""
    n = quality["num_samples"].iloc[0] if "num_samples" in quality and len(quality) else "?"
    boot = int(quality["bootstrap"].iloc[0]) if "bootstrap" in quality and len(quality) else 0
    text = [f"# The paper's claims on profile `{P['profile']}`", "",
            f"FID of {n} samples a configuration, ± 1.96 bootstrap standard errors ({boot} resamples). "
            "A comparison counts (+ or -) when the FID difference exceeds 1.96 standard errors of the "
            "difference; 0: it does not. A training run with several seeds (train.replica_seeds) is the "
            "mean over them, its ± from a two-level bootstrap over seeds and samples. Generated by "
            "`variant findings` (src/variant/stages/findings.py).", ""]
    for c in claims(P, quality):
        if only and c["key"] not in only:
            continue
        text += [f"## {c['title']}: **{c['verdict']}**", "", c["statement"], "",
                 "| comparison | worse by the claim | better by the claim | difference | counts |",
                 "|---|---|---|---|---|", *c["rows"], ""]
    return "\n".join(text)


def add_parser(sub):
    p = sub.add_parser("findings")
    params_options(p, reads="which runs the claims compare")
    p.add_argument("--quality", required=True, nargs="+",
                   help="quality.parquet of `variant collect`, or metric rows to read together")
    p.add_argument("--claims", nargs="+", choices=CLAIMS, default=None,
                   help="judge only these claims (default: all; table1 needs only the pre-trained rows)")
    p.add_argument("--out", required=True, help="Markdown file to write")
    p.set_defaults(func=_main)


def _main(a) -> int:
    P = load_params(a.params, a.profile)
    quality = pd.concat([pd.read_parquet(require_file(f, "--quality: the rows of `variant collect`"))
                         for f in a.quality], ignore_index=True)
    text = render(P, quality, a.claims)
    write_text(a.out, text + "\n")
    print(text)
    return 0
