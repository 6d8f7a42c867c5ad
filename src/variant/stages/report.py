"""`variant report`: the paper's tables and figures from one profile's results, and the
reviewer's report that holds every number the profile can measure against the paper.

Inputs are the contract's parquet files (docs/CONTRACTS.md): quality rows (one per run and
configuration), profiling rows and training logs, each filtered to the active profile.
Which rows a table reads is what variant.dag asks the pipeline to make; a configuration that
was not run leaves its cell empty, it is never filled in.

Choices, stated once:
- Tables 2 and 3 use one profiling mode, `--efficiency-mode` (default `reference`: the
  reference sampler's KV accounting, which reproduces the paper's VAR-d30 KV cache of
  28687 MB). Table 2 is measured at the profile's first profiling batch (the paper's 64).
  The paper check always reads the reference mode.
- Table 2's DiT-XL/2, LlamaGen-XXL and VAR-CoDe rows are the paper's printed cells,
  marked "copied from the paper" in the Source column; #Param is the cost model's count.
- Table 8's full-depth row and the d = D point of Figure 5 are the full network of
  progressive_d{largest d}: the paper's d=30 row (1.96) is its trained d16 supernet's full
  network, not the pretrained VAR-d30 (1.95).
- KV cache in figures: the cost model (reference accounting, first profiling batch) as a
  line, profiled values as markers.

Tolerances of the paper check (`TOLERANCES`): values are compared only when the profile
builds the paper's model (VAR-d30, the paper's scales, 1000 classes); any other profile
(tiny) compares structure only and marks each value "n/a (<profile> profile)". The analytic
KV checks (cost model vs the paper's KV columns, and vs every profiled KV cache) run in
every profile.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from variant import dag
from variant.config import load_params, phases_of
from variant.util.atomic import save_figure, write_csv, write_text
from variant.costmodel import ACCOUNTINGS, VARShape, kv_cache_mib, parameter_count
from variant.paper import check_paper, load_paper_numbers, paper_table, paper_value

# Columns of the result files (docs/CONTRACTS.md), for outputs that read none of them.
QUALITY_COLUMNS = ["run", "config", "subnet_depth", "bridge", "scales", "fid", "isc_mean", "isc_std",
                   "precision", "recall", "num_samples", "profile", "config_hash", "checkpoint_sha256",
                   "git_commit", "seed", "device"]
PROFILING_COLUMNS = ["gpu", "mode", "depth", "subnet_depth", "bridge", "batch", "memory_cap_gib", "latency_s",
                     "peak_mib", "kv_mib", "params_mib", "images_per_s", "oom", "profile"]
TABLES = ("table1", "table2", "table3", "table4", "table5", "table7", "table8")
FIGURES = ("pareto", "fig2b_losses", "fig2c_ratios", "fig3a_schedule", "fig5_depth", "fig5_bridge", "fig5_space",
           "fig7_evolution")
NOT_RUN = "not run"
COPIED = "copied from the paper"
P_START, P_END = 0.2, 1.0       # Eq. 5: subnet probability in phase 1 and after phase 2


# ---- the profile and its results -------------------------------------------------------------

def var_shape(cfg: dict) -> VARShape:
    """The profile's VAR as the cost model sees it (released models: width 64*D)."""
    model, var = cfg["model"], cfg["model"]["var"]
    kw = dict(patch_nums=tuple(model["patch_nums"]), vocab=model["vae"]["vocab_size"],
              cvae=model["vae"]["z_channels"], num_classes=cfg["data"]["num_classes"])
    if "width" in var:
        return VARShape(depth=var["depth"], width=var["width"], num_heads=var["num_heads"], **kw)
    return VARShape.from_depth(var["depth"], **kw)


@dataclass
class Results:
    """One profile's parameters and result rows, ready to look up."""

    cfg: dict
    quality: pd.DataFrame     # indexed by (run, config)
    profiling: pd.DataFrame   # one row per (mode, subnet_depth, bridge, batch): repeats aggregated
    logs: pd.DataFrame
    checkpoints: list = field(default_factory=list)   # Figure 7: one per dag.fig7_runs column
    vae: str | None = None

    @classmethod
    def from_frames(cls, cfg, quality, profiling, logs=None) -> "Results":
        profile = cfg["profile"]
        quality = _own_profile(quality, profile)
        dup = quality.duplicated(["run", "config"], keep=False)
        if dup.any():
            raise ValueError(f"quality rows repeat (run, config): "
                             f"{quality.loc[dup, ['run', 'config']].drop_duplicates().values.tolist()}")
        logs = _own_profile(pd.DataFrame() if logs is None else logs, profile)
        return cls(cfg, quality.set_index(["run", "config"]).sort_index(),
                   _supernet_rows(_own_profile(profiling, profile)), logs)

    @property
    def D(self) -> int:
        return dag.depth(self.cfg)

    @property
    def K(self) -> int:
        return dag.num_scales(self.cfg)

    @property
    def bridge(self) -> int:
        return self.cfg["train"]["bridge"]

    @property
    def depths(self) -> list[int]:
        return sorted(self.cfg["train"]["subnet_depths"])

    @property
    def first_batch(self) -> int:
        return self.cfg["profiling"]["batches"][0]

    @property
    def full_run(self) -> str:
        """The run whose full network stands for d = D in Table 8 and Figure 5."""
        return f"progressive_d{max(self.depths)}"

    def q(self, run: str, config: str) -> pd.Series | None:
        try:
            return self.quality.loc[(run, config)]
        except KeyError:
            return None

    def grid(self, run: str, d: int, n: int) -> pd.Series | None:
        return self.q(run, dag.grid_config(self.cfg, d, n))

    def p(self, mode: str, d: int, n: int | None, batch: int) -> pd.Series | None:
        """Profiling row of subnet d with bridge n (d == D: the full network, any bridge)."""
        f = self.profiling
        sel = (f["mode"] == mode) & (f["batch"] == batch) & (f["subnet_depth"] == d)
        if d != self.D:
            sel &= f["bridge"] == n
        rows = f[sel]
        return None if rows.empty else rows.iloc[0]


def _own_profile(frame: pd.DataFrame, profile: str) -> pd.DataFrame:
    if "profile" in frame.columns:
        frame = frame[frame["profile"] == profile]
    return frame.reset_index(drop=True)


def _supernet_rows(profiling: pd.DataFrame) -> pd.DataFrame:
    """The supernet's profiling rows (CoDe's are left out: Table 2 copies the paper's), one per
    configuration: median over repeated rows, OOM if any repeat ran out of memory."""
    keys = ["mode", "subnet_depth", "bridge", "batch"]
    if "method" in profiling.columns:
        profiling = profiling[profiling["method"] != "code"]
    if profiling.empty:
        return pd.DataFrame(columns=[*keys, "oom", "kv_mib"])
    agg = {c: "median" for c in ("latency_s", "peak_mib", "kv_mib", "params_mib", "images_per_s")
           if c in profiling.columns}
    agg |= {c: "first" for c in profiling.columns if c not in agg and c not in keys}
    agg["oom"] = "any"
    return profiling.groupby(keys, as_index=False, dropna=False).agg(agg)


# ---- tables -----------------------------------------------------------------------------------

@dataclass
class Table:
    """A table's cells by (row key, column), and which of them the paper also prints."""

    name: str
    title: str
    columns: list[str]
    formats: dict[str, Callable] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cells: dict = field(default_factory=dict)
    keys: list = field(default_factory=list)
    measured: list[dict] = field(default_factory=list)  # paper_id, value, source row

    def put(self, key, column, value, source=None, paper_id=None):
        if key not in self.keys:
            self.keys.append(key)
        self.cells[(key, column)] = value
        if paper_id:
            self.measured.append(dict(paper_id=paper_id, value=value, source=source))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([[self.cells.get((k, c)) for c in self.columns] for k in self.keys],
                            columns=self.columns)

    def text(self) -> pd.DataFrame:
        """Cells as printed: numbers formatted per column, a missing value empty."""
        def show(column, v):
            if _missing(v):
                return ""
            return self.formats[column](v) if column in self.formats and not isinstance(v, str) else str(v)
        return pd.DataFrame([[show(c, self.cells.get((k, c))) for c in self.columns] for k in self.keys],
                            columns=self.columns)


def _missing(v) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def _get(row: pd.Series | None, column: str):
    return None if row is None else row.get(column)


def _fmt(spec: str) -> Callable:
    return lambda v: format(v, spec)


def _mib(v: float) -> str:
    """Whole MiB as the paper prints them; tenths for the tiny profile's few-MiB caches."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _count(v: float) -> str:
    return f"{v / 1e9:.1f}B" if v >= 1e9 else f"{v / 1e6:.3g}M"


FID = _fmt(".2f")
NOTE_EMPTY = "An empty cell: that configuration was not run (no row in the results)."


def _scales(scales) -> str:
    """1-based scales as the paper prints them: [1,2,3,7,8] -> 'r1-r3, r7-r8'."""
    runs = []
    for k in sorted(scales):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"r{a}" if a == b else f"r{a}-r{b}" for a, b in runs) or "None"


def table1(r: Results) -> Table:
    D, K, d = r.D, r.K, r.cfg["sample"]["table1_depth"]
    t = Table("table1", f"Table 1. The training-free d={d} subnet on early, middle or late scales "
              f"(run `pretrained`, D={D}).", ["Strategy", f"d={D} scales", f"d={d} scales", "Final FID"],
              {"Final FID": FID}, [NOTE_EMPTY])
    strategies = [("Full depth", "full-depth", "full", [])]
    for (name, slug), config in zip([("Early subnet", "early-subnet"), ("Mid subnet", "mid-subnet"),
                                     ("Late subnet (Ours)", "late-subnet")], dag.table1_configs(r.cfg)):
        strategies.append((name, slug, config, [int(k) for k in config.split("_S")[1].split("-")]))
    for name, slug, config, subnet in strategies:
        row = r.q("pretrained", config)
        t.put(name, "Strategy", name)
        t.put(name, f"d={D} scales", _scales(set(range(1, K + 1)) - set(subnet)))
        t.put(name, f"d={d} scales", _scales(subnet))
        t.put(name, "Final FID", _get(row, "fid"), row, f"table1/{slug}/fid")
    return t


def _label(r: Results, d: int) -> str:
    return f"VAR-d{r.D}" if d == r.D else f"VARiant-d{d}"


def _paper_label(r: Results, d: int) -> str:
    """The paper's row for the profile's depth d: the full model is the paper's VAR-d30."""
    return "VAR-d30" if d == r.D else f"VARiant-d{d}"


def table2(r: Results, mode: str = "reference") -> Table:
    batch = r.first_batch
    t = Table("table2", f"Table 2. Efficiency (profiling mode `{mode}`, batch {batch}, VQVAE decoding "
              "excluded) and quality of each depth at the training bridge.",
              ["Method", "#Steps", "Speedup", "Latency", "Mem", "KV Cache", "#Param", "FID", "IS", "Prec",
               "Rec", "Source"],
              {"Speedup": lambda v: f"{v:.1f}×", "Latency": lambda v: f"{v:.2f}s" if v >= 0.1 else f"{v:.2g}s",
               "Mem": lambda v: f"{_mib(v)}MB", "KV Cache": lambda v: f"{_mib(v)}MB", "#Param": _count, "FID": FID,
               "IS": _fmt(".0f"), "Prec": _fmt(".2f"), "Rec": _fmt(".2f")},
              [NOTE_EMPTY, "Mem and KV Cache in MiB (the paper's MB); #Param from the cost model; "
               "Speedup = VAR latency / row latency, both measured here.",
               f"Rows marked '{COPIED}' are the paper's printed cells (its L20 GPU, batch 64)."])
    copied = paper_table("table2").set_index(["row", "column"])
    full = r.p(mode, r.D, None, batch)
    quality = {r.D: r.q("pretrained", "full"),
               **{d: r.grid(f"progressive_d{d}", d, r.bridge) for d in r.depths}}
    for method in ("DiT-XL/2", "LlamaGen-XXL", r.D, "VAR-CoDe", *sorted(r.depths, reverse=True)):
        if isinstance(method, str):
            for column in t.columns[1:-1]:   # the printed text where it is not one number ("6+4")
                cell = copied.loc[(method, column)]
                printed = cell["unit"] == "n/a" or column in ("#Steps", "#Param")
                t.put(method, column, cell["quote"] if printed else cell["value"])
            t.put(method, "Method", method)
            t.put(method, "Source", COPIED)
            continue
        d, ids = method, f"table2/{_paper_label(r, method)}"
        prof, row = r.p(mode, d, r.bridge, batch), quality[method]
        t.put(d, "Method", _label(r, d))
        t.put(d, "#Steps", f"{r.K}" if d == r.D else f"{r.bridge}+{r.K - r.bridge}")
        speedup = None if prof is None or full is None else full["latency_s"] / prof["latency_s"]
        for column, value, key in [("Speedup", speedup, "speedup_x"),
                                   ("Latency", _get(prof, "latency_s"), "latency_s"),
                                   ("Mem", _get(prof, "peak_mib"), "mem_mb"),
                                   ("KV Cache", _get(prof, "kv_mib"), "kv_mb")]:
            t.put(d, column, "OOM" if prof is not None and prof["oom"] else value, prof, f"{ids}/{key}")
        t.put(d, "#Param", float(parameter_count(var_shape(r.cfg))), "cost model", f"{ids}/params")
        for column, key, paper_key in [("FID", "fid", "fid"), ("IS", "isc_mean", "is"),
                                       ("Prec", "precision", "precision"), ("Rec", "recall", "recall")]:
            t.put(d, column, _get(row, key), row, f"{ids}/{paper_key}")
        t.put(d, "Source", "measured")
    return t


def table3(r: Results, mode: str = "reference") -> Table:
    cap = r.cfg["profiling"].get("memory_cap_gib")
    t = Table("table3", f"Table 3. Memory per batch size and depth in MiB (the paper's MB; profiling mode "
              f"`{mode}`{f', memory capped at {cap} GiB' if cap else ''}). OOM: out of memory.",
              ["Batch Size", "Method", "KV Cache", "Params", "Total"],
              {c: _mib for c in ("KV Cache", "Params", "Total")}, [NOTE_EMPTY])
    for batch in r.cfg["profiling"]["batches"]:
        for d in (r.D, *sorted(r.depths, reverse=True)):
            key, prof = (batch, d), r.p(mode, d, r.bridge, batch)
            t.put(key, "Batch Size", batch)
            t.put(key, "Method", _label(r, d))
            for column, col, paper in [("KV Cache", "kv_mib", "kv_mb"), ("Params", "params_mib", "params_mb"),
                                       ("Total", "peak_mib", "total_mb")]:
                value = "OOM" if prof is not None and prof["oom"] else _get(prof, col)
                t.put(key, column, value, prof, f"table3/bs{batch}/{_paper_label(r, d)}/{paper}")
    return t


def table4(r: Results) -> Table:
    cols = ["Training-free Subnet", "Training-free Full", "Joint Training Subnet", "Joint Training Full"]
    t = Table("table4", f"Table 4. FID of each subnet depth (N={r.bridge}) before (run `pretrained`) and "
              "after joint training (run `progressive_d{d}`).", ["Subnet Depth", *cols],
              {c: FID for c in cols}, [NOTE_EMPTY])
    for d in r.depths:
        sources = [(r.grid("pretrained", d, r.bridge), "tf_subnet_fid"), (r.q("pretrained", "full"), "tf_full_fid"),
                   (r.grid(f"progressive_d{d}", d, r.bridge), "joint_subnet_fid"),
                   (r.q(f"progressive_d{d}", "full"), "joint_full_fid")]
        t.put(d, "Subnet Depth", f"d={d} ({100 * d / r.D:.0f}%)")
        for column, (row, key) in zip(cols, sources):
            t.put(d, column, _get(row, "fid"), row, f"table4/d{d}/{key}")
    return t


def table5(r: Results) -> Table:
    """One pair of rows per skip-all depth; the paper has one depth, named in the column header."""
    depths = r.cfg["train"]["skip_all_depths"]
    several = len(depths) > 1
    sub = "Subnet" if several else f"Subnet (d{depths[0]})"
    cols = [f"{sub} FID", f"{sub} IS", "Full Network FID", "Full Network IS"]
    t = Table("table5", f"Table 5. Bridge-zone ablation: the subnet on every scale (run `skipall_d{{d}}`, "
              f"N=0) vs on r{r.bridge + 1}-r{r.K} (run `progressive_d{{d}}`, N={r.bridge}).",
              ["Design", *cols], {c: FID if c.endswith("FID") else _fmt(".0f") for c in cols}, [NOTE_EMPTY])
    for d in depths:
        for design, run, subnet in [(f"skip r1-r{r.K}", f"skipall_d{d}", f"d{d}_N0"),
                                    (f"skip r{r.bridge + 1}-r{r.K}", f"progressive_d{d}",
                                     dag.grid_config(r.cfg, d, r.bridge))]:
            key, slug = (d, design), design.replace(" ", "-")
            t.put(key, "Design", f"{design}, d={d}" if several else design)
            for column, row, col, paper in [(cols[0], r.q(run, subnet), "fid", "subnet_fid"),
                                            (cols[1], r.q(run, subnet), "isc_mean", "subnet_is"),
                                            (cols[2], r.q(run, "full"), "fid", "full_fid"),
                                            (cols[3], r.q(run, "full"), "isc_mean", "full_is")]:
                t.put(key, column, _get(row, col), row, None if several else f"table5/{slug}/{paper}")
    return t


def table7(r: Results) -> Table:
    cols = {"Phase 1": "phase1", "Phase 2": "phase2", "Phase 3": "phase3", "Total": "total"}
    t = Table("table7", "Table 7. Training phase lengths in epochs (params.yaml, train.phases).",
              ["Depth", *cols], {c: _fmt(".0f") for c in cols})
    for d in sorted(r.depths, reverse=True):
        phases = phases_of(r.cfg, d)
        t.put(d, "Depth", f"d={d}")
        for (column, key), value in zip(cols.items(), (*phases, sum(phases))):
            t.put(d, column, value, "params.yaml", f"table7/d{d}/{key}_epochs")
    return t


def table8(r: Results) -> Table:
    bridges = r.cfg["sample"]["bridges"]
    t = Table("table8", f"Table 8. FID over the (d, N) configuration space (runs `progressive_d{{d}}`; "
              f"the d={r.D} row is the full network of `{r.full_run}`).",
              ["d", *(f"N={n}" for n in bridges)], {f"N={n}": FID for n in bridges}, [NOTE_EMPTY])
    for d in (*r.depths, r.D):
        t.put(d, "d", f"d={d}")
        paper_d = 30 if d == r.D else d
        for n in bridges:
            row = r.q(r.full_run, "full") if d == r.D else r.grid(f"progressive_d{d}", d, n)
            t.put(d, f"N={n}", _get(row, "fid"), row, f"table8/d{paper_d}/N{n}")
    return t


def build_tables(r: Results, mode: str = "reference") -> dict[str, Table]:
    return {"table1": table1(r), "table2": table2(r, mode), "table3": table3(r, mode), "table4": table4(r),
            "table5": table5(r), "table7": table7(r), "table8": table8(r)}


# ---- writing tables ---------------------------------------------------------------------------

def to_markdown(t: Table) -> str:
    text = t.text()
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"**{t.title}**", "", "| " + " | ".join(map(cell, t.columns)) + " |",
             "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines + [""] + [f"- {n}" for n in t.notes]) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "×": r"$\times$", "–": "--"}


def _tex(s) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(t: Table) -> str:
    text = t.text()
    rows = [" & ".join(map(_tex, row)) + r" \\" for row in text.itertuples(index=False)]
    return "\n".join([
        f"% {t.name}: generated by `variant report`; edit the pipeline, not this file.",
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(t.title)}}}",
        rf"\begin{{tabular}}{{l{'r' * (len(t.columns) - 1)}}}", r"\toprule",
        " & ".join(map(_tex, t.columns)) + r" \\", r"\midrule", *rows, r"\bottomrule", r"\end{tabular}",
        *(rf"\par\footnotesize {_tex(n)}" for n in t.notes), r"\end{table}", ""])


def write_table(t: Table, directory: Path):
    write_csv(t.frame(), directory / f"{t.name}.csv")
    write_text(directory / f"{t.name}.md", to_markdown(t))
    write_text(directory / f"{t.name}.tex", to_latex(t))


# ---- figure data ------------------------------------------------------------------------------

def pareto_points(r: Results) -> pd.DataFrame:
    """Figure 2a: full-network FID vs subnet FID of each fixed ratio p, and the progressive run."""
    d, rows = r.cfg["train"]["fixed_ratios"]["depth"], []
    runs = [(f"p={p}", p, dag.fixed_ratio_run(p, d), "fixed") for p in r.cfg["train"]["fixed_ratios"]["p"]]
    for label, p, run, kind in [*runs, ("progressive", math.nan, f"progressive_d{d}", "progressive")]:
        full, subnet = r.q(run, "full"), r.grid(run, d, r.bridge)
        rows.append(dict(label=label, p=p, run=run, kind=kind, full_fid=_get(full, "fid"),
                         subnet_fid=_get(subnet, "fid"), full_row=full, subnet_row=subnet,
                         **{f"{net}_fid_{end}": _get(row, f"fid_ci_{end}")   # bootstrap interval, if any
                            for net, row in (("full", full), ("subnet", subnet)) for end in ("low", "high")}))
    return pd.DataFrame(rows)


def ratio_epochs(r: Results) -> pd.DataFrame:
    """Figure 2c: full-network and subnet FID of each fixed ratio p at the early epoch (the
    end of phase 1, from the run's snapshot) and at the end of training."""
    ratios, rows = r.cfg["train"]["fixed_ratios"], []
    early, last = dag.fig2c_epoch(r.cfg), sum(phases_of(r.cfg, ratios["depth"]))
    for p in ratios["p"]:
        run = dag.fixed_ratio_run(p, ratios["depth"])
        for epoch, source in ((early, dag.snapshot_run(run, early)), (last, run)):
            full, subnet = r.q(source, "full"), r.grid(source, ratios["depth"], r.bridge)
            rows.append(dict(p=p, epoch=epoch, run=source, full_fid=_get(full, "fid"),
                             subnet_fid=_get(subnet, "fid"), full_row=full, subnet_row=subnet))
    return pd.DataFrame(rows, columns=["p", "epoch", "run", "full_fid", "subnet_fid", "full_row", "subnet_row"])


def evolution(r: Results) -> list[tuple]:
    """Figure 7: (title, images, labels) per phase end: the Figure 7 subnet at the training
    bridge, sample.fig7 classes, the same seed in every column so only the weights differ."""
    from variant.stages.sample import fixed_samples
    runs = dag.fig7_runs(r.cfg)
    if not r.checkpoints:
        return []
    if len(r.checkpoints) != len(runs):
        raise ValueError(f"Figure 7 needs {len(runs)} checkpoints ({', '.join(run for _, run in runs)}), "
                         f"got {len(r.checkpoints)}")
    if r.vae is None:
        raise ValueError("Figure 7 samples images: pass --vae")
    config, f7 = dag.grid_config(r.cfg, dag.fig7_depth(r.cfg), r.bridge), r.cfg["sample"]["fig7"]
    return [(f"{title}\n{config}", *fixed_samples(r.cfg, ckpt, r.vae, config, f7["classes"], f7["per_class"]))
            for (title, _), ckpt in zip(runs, r.checkpoints)]


def loss_curves(r: Results) -> pd.DataFrame:
    """Figure 2b: per-epoch mean loss of the full network and the subnet at the extreme ratios."""
    ratios = r.cfg["train"]["fixed_ratios"]
    runs = {dag.fixed_ratio_run(p, ratios["depth"]): p for p in (min(ratios["p"]), max(ratios["p"]))}
    logs = r.logs[r.logs["run"].isin(runs)] if not r.logs.empty else r.logs
    if logs.empty:
        return pd.DataFrame(columns=["run", "p", "network", "epoch", "loss"])
    long = logs[["run", "epoch", "loss_full", "loss_subnet"]].melt(
        id_vars=["run", "epoch"], var_name="network", value_name="loss").dropna(subset=["loss"])
    curves = long.groupby(["run", "network", "epoch"], as_index=False)["loss"].mean()
    return curves.assign(p=curves["run"].map(runs), network=curves["network"].str.removeprefix("loss_"))


def schedule(r: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3a: the logged subnet probability per epoch, and Eq. 5 from the phase lengths."""
    runs = {f"progressive_d{d}": d for d in r.depths}
    logs = r.logs[r.logs["run"].isin(runs)] if not r.logs.empty else r.logs
    logged = (logs.groupby(["run", "epoch"], as_index=False).agg(subnet_prob=("subnet_prob", "mean"),
                                                                 used_subnet=("used_subnet", "mean"))
              .assign(d=lambda f: f["run"].map(runs)) if not logs.empty
              else pd.DataFrame(columns=["run", "epoch", "subnet_prob", "used_subnet", "d"]))
    eq5 = []
    for d in r.depths:
        e1, e2, e3 = phases_of(r.cfg, d)
        eq5 += [dict(d=d, epoch=e, p=p) for e, p in
                [(0, P_START), (e1, P_START), (e1 + e2, P_END), (e1 + e2 + e3, P_END)]]
    return logged, pd.DataFrame(eq5)


def config_grid(r: Results, mode: str = "reference") -> pd.DataFrame:
    """Figure 5: FID and KV cache of every (d, N) at the first profiling batch; the full
    network is d = D, N = K."""
    shape, batch, rows = var_shape(r.cfg), r.first_batch, []
    points = [(d, n) for d in r.depths for n in r.cfg["sample"]["bridges"]] + [(r.D, r.K)]
    for d, n in points:
        quality = r.q(r.full_run, "full") if d == r.D else r.grid(f"progressive_d{d}", d, n)
        prof = r.p(mode, d, n, batch)
        rows.append(dict(d=d, N=n, fid=_get(quality, "fid"), kv_analytic_mib=kv_cache_mib(shape, d, n, batch, mode),
                         kv_measured_mib=None if prof is None or prof["oom"] else prof["kv_mib"]))
    return pd.DataFrame(rows, columns=["d", "N", "fid", "kv_analytic_mib", "kv_measured_mib"]).astype(float)


# ---- figures ----------------------------------------------------------------------------------

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINES = ["-", "--", "-.", ":"]


def _figure(ncols=1, width=4.2, nrows=None, height=3.2):
    """A row of `ncols` axes; with `nrows`, a grid of them (rows of axes)."""
    # Plotting libraries load here, not at import: `variant` imports every stage module.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    fig, axes = plt.subplots(nrows or 1, ncols, figsize=(width * ncols, height * (nrows or 1)), squeeze=False)
    return fig, ([list(row) for row in axes] if nrows else list(axes[0]))


def _save(fig, path) -> list[Path]:
    import matplotlib.pyplot as plt
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".pdf", ".png") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    out = [base.parent / f"{base.name}.pdf", base.parent / f"{base.name}.png"]
    save_figure(fig, out[0])
    save_figure(fig, out[1], dpi=200)
    plt.close(fig)
    return out


def _no_data(ax, what: str):
    ax.text(0.5, 0.5, f"no results for {what}", ha="center", va="center", transform=ax.transAxes)


def _style(i: int) -> dict:
    """Marker and line style by index, so series differ in grey print, not by colour alone."""
    return dict(marker=MARKERS[i % len(MARKERS)], linestyle=LINES[i % len(LINES)])


def _interval(points: pd.DataFrame, net: str):
    """(below, above) distances of the {net} FID interval from the FID, for errorbar; None without one."""
    low, high = points.get(f"{net}_fid_low"), points.get(f"{net}_fid_high")
    if points.empty or low is None or high is None or low.isna().any() or high.isna().any():
        return None
    fid = points[f"{net}_fid"].astype(float)
    return [(fid - low.astype(float)).to_numpy(), (high.astype(float) - fid).to_numpy()]


def plot_pareto(points: pd.DataFrame, path) -> list[Path]:
    fig, (ax,) = _figure()
    fixed = points[(points["kind"] == "fixed")].dropna(subset=["full_fid", "subnet_fid"])
    star = points[(points["kind"] == "progressive")].dropna(subset=["full_fid", "subnet_fid"])
    if fixed.empty and star.empty:
        _no_data(ax, "the fixed-ratio and progressive runs")
    ax.plot(fixed["full_fid"], fixed["subnet_fid"], color="0.35", marker="o", linestyle="-", label="fixed ratio p")
    for _, pt in fixed.iterrows():
        ax.annotate(pt["label"], (pt["full_fid"], pt["subnet_fid"]), textcoords="offset points", xytext=(4, 4))
    ax.plot(star["full_fid"], star["subnet_fid"], color="black", marker="*", markersize=14, linestyle="none",
            label="progressive")
    for part, color in ((fixed, "0.35"), (star, "black")):   # FID intervals where evaluate bootstrapped
        err = {axis: _interval(part, net) for axis, net in (("xerr", "full"), ("yerr", "subnet"))}
        if all(e is not None for e in err.values()):
            ax.errorbar(part["full_fid"], part["subnet_fid"], **err, fmt="none", ecolor=color, elinewidth=0.8,
                        capsize=2)
    ax.set(xlabel="full-network FID", ylabel="subnet FID", title="Fixed ratios vs progressive")
    ax.margins(0.15)
    ax.legend()
    return _save(fig, path)


def _full_and_subnet(series: Callable, xlabel: str, ylabel: str, what: str, path) -> list[Path]:
    """Two panels, full network and subnet; series(network) gives their lines as (label, x, y)."""
    fig, axes = _figure(ncols=2)
    for ax, network in zip(axes, ("full", "subnet")):
        lines = series(network)
        for i, (label, x, y) in enumerate(lines):
            ax.plot(x, y, label=label, color=f"{0.1 + 0.4 * (i % 2)}", **_style(i))
        if lines:
            ax.legend()
        else:
            _no_data(ax, f"{network}-network {what}")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{network} network" if network == "full" else network)
    return _save(fig, path)


def plot_losses(curves: pd.DataFrame, path) -> list[Path]:
    return _full_and_subnet(lambda net: [(f"p={p:g}", c["epoch"], c["loss"]) for p, c in
                                         curves[curves["network"] == net].groupby("p")],
                            "epoch", "training loss", "steps", path)


def plot_ratio_epochs(points: pd.DataFrame, path) -> list[Path]:
    """Figure 2c: FID vs p, full network and subnet, one line per epoch (early, last)."""
    return _full_and_subnet(lambda net: [(f"epoch {e}", line["p"], line[f"{net}_fid"]) for e, line in
                                         points.dropna(subset=[f"{net}_fid"]).groupby("epoch")],
                            "subnet ratio p", "FID", "FIDs", path)


def plot_evolution(columns: list, path) -> list[Path]:
    """Figure 7: one column per phase end, one row per (class, image)."""
    if not columns:
        fig, (ax,) = _figure()
        _no_data(ax, "the phase-end checkpoints")
        ax.axis("off")
        return _save(fig, path)
    n = len(columns[0][1])
    fig, grid = _figure(ncols=len(columns), nrows=n, width=1.6, height=1.6)
    for j, (title, images, labels) in enumerate(columns):
        grid[0][j].set_title(title, fontsize=8)
        for i, ax in enumerate(row[j] for row in grid):
            ax.imshow(images[i], interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if j == 0:
                ax.set_ylabel(f"class {labels[i]}", fontsize=8)
    return _save(fig, path)


def plot_schedule(logged: pd.DataFrame, eq5: pd.DataFrame, path) -> list[Path]:
    fig, (ax,) = _figure(width=5)
    for i, (d, line) in enumerate(eq5.groupby("d")):
        ax.plot(line["epoch"], line["p"], color="0.6", linestyle=LINES[i % len(LINES)], label=f"Eq. 5, d={d}")
    for i, (d, log) in enumerate(logged.groupby("d")):   # hollow, shrinking: coinciding points stay visible
        ax.plot(log["epoch"], log["subnet_prob"], color="black", marker=MARKERS[i % len(MARKERS)],
                markerfacecolor="none", markersize=9 - 2 * (i % 3), linestyle="none", label=f"logged, d={d}")
    if logged.empty:
        _no_data(ax, "progressive training logs")
    ax.set(xlabel="epoch", ylabel="subnet probability", ylim=(0, 1.05), title="Sampling schedule")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _fid_and_kv(points: pd.DataFrame, x: str, xlabel: str, title: str, path) -> list[Path]:
    """FID on the left axis, KV cache on the right: analytic line, profiled markers."""
    fig, (ax,) = _figure()
    points = points.sort_values(x)
    ax.plot(points[x], points["fid"], color="black", marker="o", linestyle="-", label="FID")
    ax.set(xlabel=xlabel, ylabel="FID", title=title)
    kv = ax.twinx()
    kv.grid(False)
    kv.plot(points[x], points["kv_analytic_mib"], color="0.5", marker="s", linestyle="--",
            label="KV cache (cost model)")
    kv.plot(points[x], points["kv_measured_mib"], color="0.5", marker="^", markerfacecolor="none",
            linestyle="none", markersize=9, label="KV cache (profiled)")
    kv.set_ylabel("KV cache (MiB)")
    if points["fid"].isna().all():
        _no_data(ax, "FID")
    handles = ax.get_legend_handles_labels()[0] + kv.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small", loc="upper center")
    return _save(fig, path)


def plot_depth(points: pd.DataFrame, path) -> list[Path]:
    """Figure 5a: points has d, fid, kv_analytic_mib, kv_measured_mib at one N."""
    return _fid_and_kv(points, "d", "subnet depth d", "FID and memory vs depth", path)


def plot_bridge(points: pd.DataFrame, path) -> list[Path]:
    """Figure 5b: the same columns with N, at one d."""
    return _fid_and_kv(points, "N", "bridge scales N", "FID and memory vs N", path)


def plot_space(points: pd.DataFrame, path) -> list[Path]:
    """Figure 5c: KV cache vs FID of every (d, N); colour and marker = d, marker size = N."""
    import seaborn as sns
    fig, (ax,) = _figure(width=5)
    depths = sorted(points["d"].unique())
    colours = sns.color_palette("viridis", len(depths))
    for i, d in enumerate(depths):
        part = points[points["d"] == d].sort_values("N")
        ax.plot(part["kv_analytic_mib"], part["fid"], color=colours[i], linestyle=LINES[i % len(LINES)])
        ax.scatter(part["kv_analytic_mib"], part["fid"], s=25 + 35 * (part["N"] - points["N"].min()), color=colours[i],
                   marker=MARKERS[i % len(MARKERS)], edgecolor="black", label=f"d={d:g}")
    if points["fid"].isna().all():
        _no_data(ax, "FID")
    ax.set(xlabel="KV cache (MiB, cost model)", ylabel="FID", title="Configuration space (size = N)")
    ax.legend(fontsize="small")
    return _save(fig, path)


FIGURE_MAKERS = {
    "pareto": lambda r, path: plot_pareto(pareto_points(r), path),
    "fig2b_losses": lambda r, path: plot_losses(loss_curves(r), path),
    "fig2c_ratios": lambda r, path: plot_ratio_epochs(ratio_epochs(r), path),
    "fig3a_schedule": lambda r, path: plot_schedule(*schedule(r), path),
    "fig5_depth": lambda r, path: plot_depth(
        (g := config_grid(r))[(g["N"] == r.bridge) | (g["d"] == r.D)], path),
    "fig5_bridge": lambda r, path: plot_bridge((g := config_grid(r))[g["d"] == max(r.depths)], path),
    "fig5_space": lambda r, path: plot_space(config_grid(r), path),
    "fig7_evolution": lambda r, path: plot_evolution(evolution(r), path),
}


def make_figures(r: Results, directory: Path, only: str | None = None) -> list[Path]:
    return [f for name, make in FIGURE_MAKERS.items() if only in (None, name)
            for f in make(r, Path(directory) / name)]


# ---- the paper check --------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """Allowed |measured - paper|: the larger of `absolute` and `relative` x |paper|."""

    rule: str
    absolute: float = 0.0
    relative: float = 0.0

    def allowed(self, paper: float) -> float:
        return max(self.absolute, self.relative * abs(paper))


# By the paper number's unit; a KV cache (id ending in kv_mb) is tighter than other memory,
# because it follows from the architecture alone.
TOLERANCES = {
    "FID": Tolerance("FID: +-0.1 or 5%, the larger", 0.1, 0.05),
    "IS": Tolerance("IS: 5%", relative=0.05),
    "fraction": Tolerance("precision/recall: +-0.02", 0.02),
    "x": Tolerance("latency ratio: 10%", relative=0.10),
    "kv": Tolerance("KV cache: 0.5%", relative=0.005),
    "MB": Tolerance("memory: 5% (allocator and workspace differ by GPU)", relative=0.05),
    "params": Tolerance("#Param: +-0.05B (printed to 0.1B)", 0.05e9),
    "epochs": Tolerance("epochs: exact"),
}
NOT_COMPARED = {"s": "latency in seconds: not compared (the paper's L20 vs this GPU); see Speedup"}


def _tolerance(paper_id: str, unit: str) -> Tolerance | None:
    return TOLERANCES["kv"] if paper_id.endswith("kv_mb") else TOLERANCES.get(unit)


def comparable(cfg: dict) -> bool:
    """Values are compared only when the profile builds the paper's model."""
    return var_shape(cfg) == VARShape.from_depth(30)


PROVENANCE = ["source", "config_hash", "git_commit", "checkpoint"]


def _provenance(source) -> dict:
    """Where a value comes from: a quality or profiling row, or (a string) params.yaml or the cost model."""
    if source is None or isinstance(source, str):
        return dict(source=source or "", config_hash="", git_commit="", checkpoint="")
    if isinstance(source.name, tuple):   # a quality row, indexed by (run, config)
        where = "/".join(source.name)
    else:
        where = (f"profiling {source['mode']} d={int(source['subnet_depth'])} N={int(source['bridge'])} "
                 f"batch={int(source['batch'])}")
    get = lambda k: str(source.get(k, "") or "")  # noqa: E731
    return dict(source=where, config_hash=get("config_hash"), git_commit=get("git_commit")[:12],
                checkpoint=get("checkpoint_sha256")[:12])


def _judge(paper: pd.Series, measured, profile: str, is_comparable: bool) -> dict:
    """Deviation, tolerance and status of one measured value against one paper number."""
    out = dict(deviation="", tolerance="", status="")
    if _missing(measured):
        return out | dict(status=NOT_RUN)
    if not is_comparable:
        return out | dict(tolerance=f"n/a ({profile} profile)", status=f"n/a ({profile} profile)")
    if paper["unit"] == "OOM" or measured == "OOM":
        return out | dict(tolerance="both OOM", status="PASS" if paper["unit"] == measured == "OOM" else "FAIL")
    tol = _tolerance(paper["id"], paper["unit"])
    if tol is None:
        return out | dict(tolerance=NOT_COMPARED.get(paper["unit"], "not compared"), status="info")
    dev, allowed = float(measured) - paper["value"], tol.allowed(paper["value"])
    return dict(deviation=f"{dev:+.4g}", tolerance=f"±{allowed:.4g} ({tol.rule})",
                status="PASS" if abs(dev) <= allowed + 1e-12 else "FAIL")


def _show(v) -> str:
    if _missing(v):
        return ""
    return v if isinstance(v, str) else f"{float(v):.6g}"


def measured_vs_paper(r: Results, tables: dict[str, Table]) -> pd.DataFrame:
    """(a) Every paper number the profile has a place for, with the measured value."""
    numbers = load_paper_numbers().set_index("id", drop=False)
    is_comparable, rows = comparable(r.cfg), []
    measured = [m for t in tables.values() for m in t.measured]
    for _, pt in pareto_points(r).query("kind == 'fixed'").iterrows():
        for what in ("full", "subnet"):
            measured.append(dict(paper_id=f"figure2a/{pt['label']}/{what}_fid", value=pt[f"{what}_fid"],
                                 source=pt[f"{what}_row"]))
    ratios = ratio_epochs(r)   # Figure 2c: the range of full-network FIDs at the early epoch
    early = ratios[ratios["epoch"] == dag.fig2c_epoch(r.cfg)].dropna(subset=["full_fid"])
    for what, pick in (("min", "idxmin"), ("max", "idxmax")):
        at = getattr(early["full_fid"], pick)() if not early.empty else None
        measured.append(dict(paper_id=f"figure2c/epoch5/full_fid_{what}",
                             value=None if at is None else early.loc[at, "full_fid"],
                             source=None if at is None else early.loc[at, "full_row"]))
    for m in measured:
        if m["paper_id"] not in numbers.index:
            continue
        paper = numbers.loc[m["paper_id"]]
        rows.append(dict(paper_id=m["paper_id"], paper=paper["quote"], measured=_show(m["value"]),
                         **_judge(paper, m["value"], r.cfg["profile"], is_comparable), **_provenance(m["source"])))
    return pd.DataFrame(rows, columns=["paper_id", "paper", "measured", "deviation", "tolerance", "status",
                                       *PROVENANCE])


KV_COLUMNS = ["quantity", "value", "cost_model", "cost_model_is", "deviation", "tolerance", "status"]


def _kv_row(what: str, value: float, model: float, model_text: str) -> dict:
    tol = TOLERANCES["kv"]
    dev = value - model
    return dict(quantity=what, value=f"{value:.1f}", cost_model=f"{model:.1f}", cost_model_is=model_text,
                deviation=f"{100 * dev / model:+.2f}%", tolerance=f"±{100 * tol.relative:g}%",
                status="PASS" if abs(dev) <= tol.allowed(model) else "FAIL")


def paper_kv_vs_cost_model() -> pd.DataFrame:
    """(a) Analytic: the paper's KV columns against the cost model of VAR-d30 (reference accounting)."""
    numbers = load_paper_numbers()
    d30, bridge, rows = VARShape.from_depth(30), int(paper_value("table6/bridge-zone/value")), []
    for _, n in numbers[numbers["id"].str.endswith("kv_mb") & (numbers["unit"] == "MB")].iterrows():
        label, batch = n["id"].split("/")[-2], 64
        if n["table"] == "table3":
            batch = int(n["id"].split("/")[1].removeprefix("bs"))
        if label == "VAR-CoDe":   # its peak KV is its refiner, a plain VAR-d16
            model, text = kv_cache_mib(VARShape.from_depth(16), None, None, batch), f"plain VAR-d16, batch {batch}"
        else:
            d = None if label == "VAR-d30" else int(label.removeprefix("VARiant-d"))
            model = kv_cache_mib(d30, d, bridge, batch)
            text = f"VAR-d30, batch {batch}" + ("" if d is None else f", d={d}, N={bridge}")
        rows.append(_kv_row(f"{n['id']} ('{n['quote']}')", n["value"], model, text))
    return pd.DataFrame(rows, columns=KV_COLUMNS)


def profiled_kv_vs_cost_model(r: Results) -> pd.DataFrame:
    """(a) Analytic: every profiled KV cache against the cost model of this profile's VAR, in the
    accounting the profiler recorded (kv_mib_costmodel: its device's dtypes), else the mode's."""
    shape, rows = var_shape(r.cfg), []
    for _, p in r.profiling.iterrows():
        recorded = p.get("kv_mib_costmodel")
        if p["oom"] or _missing(p.get("kv_mib")) or (_missing(recorded) and p["mode"] not in ACCOUNTINGS):
            continue
        d, full = int(p["subnet_depth"]), int(p["subnet_depth"]) == r.D
        n = None if full else int(p["bridge"])
        if _missing(recorded):
            model, how = kv_cache_mib(shape, d, n, int(p["batch"]), p["mode"]), f"{p['mode']} accounting"
        else:
            model, how = float(recorded), "the profiler's accounting (kv_mib_costmodel)"
        config = "full" if full else f"d={d}, N={n}"
        rows.append(_kv_row(f"{p['mode']} {config}, batch {int(p['batch'])}", float(p["kv_mib"]), model, how)
                    | _provenance(p))
    return pd.DataFrame(rows, columns=[*KV_COLUMNS, *PROVENANCE])


def paper_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """(b) The checks of the paper against itself that fail, with both places."""
    bad = findings[~findings["ok"]]
    places = bad["places"].str.split(" VS ", n=1, expand=True).reindex(columns=[0, 1])
    return pd.DataFrame({"check": bad["check"], "claimed": bad["claimed"].map(_show),
                         "recomputed": bad["recomputed"].map(_show), "claim (place 1)": places[0],
                         "against (place 2)": places[1], "note": bad["note"]}).reset_index(drop=True)


@dataclass
class Section:
    title: str
    intro: str
    frame: pd.DataFrame


def paper_check(r: Results, tables: dict[str, Table], findings: pd.DataFrame) -> list[Section]:
    a = measured_vs_paper(r, tables)
    counts = a["status"].value_counts().to_dict()
    rules = "; ".join(t.rule for t in TOLERANCES.values()) + "; " + "; ".join(NOT_COMPARED.values())
    scope = ("Values are compared: this profile builds the paper's model." if comparable(r.cfg) else
             f"Profile `{r.cfg['profile']}` does not build the paper's model (VAR-d{r.D}, "
             f"{r.cfg['data']['num_classes']} classes): its values are not comparable with the paper's, so "
             "this section checks structure only (which numbers have a measured counterpart).")
    paper_kv, own_kv = paper_kv_vs_cost_model(), profiled_kv_vs_cost_model(r)
    failed = (~findings["ok"]).sum()
    return [
        Section("(a) Measured numbers vs the paper",
                f"{scope} Tolerances: {rules}. Status counts: "
                + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none")
                + ". Provenance: the row a value comes from (run/config, or the profiling configuration), its "
                "config_hash, and the first 12 hex digits of its git_commit and checkpoint sha256.", a),
        Section("(a) Analytic: the paper's KV cache vs the cost model",
                "Checked in every profile: the cost model's reference accounting (fp32 keys, fp16 values, every "
                f"scale of every layer, CFG doubles the batch) of VAR-d30; tolerance 0.5%. "
                f"{(paper_kv['status'] == 'FAIL').sum()} of {len(paper_kv)} fail.", paper_kv),
        Section("(a) Analytic: profiled KV cache vs the cost model of this profile",
                f"Every profiled (mode, d, N, batch) that did not run out of memory, against the cost model "
                f"of this profile's VAR in the accounting the profiler recorded for its device (else the "
                f"mode's); tolerance 0.5%. "
                f"{(own_kv['status'] == 'FAIL').sum()} of {len(own_kv)} fail.", own_kv),
        Section("(b) The paper against itself",
                f"variant.paper.check_paper(): {len(findings) - failed} of {len(findings)} checks agree; the "
                f"{failed} that do not are listed with both places.", paper_findings(findings)),
    ]


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    cell = lambda v: _show(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def render_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}\n"]
    for s in sections:
        parts += [f"## {s.title}\n", s.intro + "\n", _md_table(s.frame)]
    return "\n".join(parts)


def render_html(title: str, sections: list[Section]) -> str:
    """Self-contained: inline CSS, no scripts. Status is spelled out, not shown by colour alone."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;"
             "font-size:85%}td,th{border:1px solid #999;padding:2px 6px;vertical-align:top}"
             "th{background:#eee}.FAIL{background:#fdd;font-weight:bold}.PASS{background:#dfd}")
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body += [f"<h2>{html.escape(s.title)}</h2>", f"<p>{html.escape(s.intro)}</p>"]
        if s.frame.empty:
            body.append("<p>(none)</p>")
            continue
        head = "".join(f"<th>{html.escape(c)}</th>" for c in s.frame.columns)
        rows = []
        for row in s.frame.itertuples(index=False):
            status = dict(zip(s.frame.columns, row)).get("status", "")
            rows.append(f'<tr class="{html.escape(str(status))}">'
                        + "".join(f"<td>{html.escape(_show(v))}</td>" for v in row) + "</tr>")
        body.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---- the stage --------------------------------------------------------------------------------

def report(r: Results, tables_dir, figures_dir, report_dir, mode: str = "reference",
           findings: pd.DataFrame | None = None, only: str | None = None) -> list[Section]:
    """Write every table, figure and the paper check (or only the one named); return the
    check's sections (empty when `only` names a table or figure)."""
    tables = build_tables(r, mode)
    for name, t in tables.items():
        if only in (None, name):
            write_table(t, Path(tables_dir))
    if only is None or only in FIGURE_MAKERS:
        make_figures(r, Path(figures_dir), only)
    if only not in (None, "paper_check"):
        return []
    reference = tables if mode == "reference" else build_tables(r, "reference")
    sections = paper_check(r, reference, check_paper() if findings is None else findings)
    title = f"Paper check: profile `{r.cfg['profile']}` (config_hash {r.cfg['config_hash']})"
    report_dir = Path(report_dir)
    write_text(report_dir / "paper_check.md", render_markdown(title, sections))
    write_text(report_dir / "paper_check.html", render_html(title, sections))
    return sections


def add_parser(sub):
    p = sub.add_parser("report", help="the paper's tables and figures, and the reviewer's paper check")
    p.add_argument("--profile")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--only", help="one table or figure name, or paper_check (default: everything)")
    p.add_argument("--quality", help="default results/P/quality.parquet")
    p.add_argument("--metrics", nargs="*", default=[], help="per-configuration metric rows, instead of --quality")
    p.add_argument("--profiling", nargs="*", default=None, help="default results/P/profiling.parquet")
    p.add_argument("--training-logs", nargs="*", default=[], help="results/P/train/{run}.parquet files")
    p.add_argument("--checkpoints", nargs="*", default=[],
                   help="Figure 7: the VAR checkpoints at each phase end, in variant.dag.fig7_runs order")
    p.add_argument("--vae", help="Figure 7: the VQVAE")
    p.add_argument("--tables-dir", help="default results/P/tables")
    p.add_argument("--figures-dir", default="figures")
    p.add_argument("--report-dir", help="default results/P")
    p.add_argument("--efficiency-mode", default="reference",
                   help="profiling mode of Tables 2 and 3 (default: reference, the paper's accounting)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    cfg = load_params(args.params, args.profile)
    results = Path("results") / cfg["profile"]
    known = set(TABLES) | set(FIGURE_MAKERS) | {"paper_check"}
    if args.only is not None and args.only not in known:
        raise ValueError(f"--only {args.only!r}: not one of {', '.join(sorted(known))}")
    logs = [pd.read_parquet(f) for f in args.training_logs]
    if args.metrics or (args.only is not None and not args.quality):   # one output reads only its own rows
        quality = pd.concat([pd.read_parquet(f) for f in args.metrics], ignore_index=True) if args.metrics \
            else pd.DataFrame(columns=QUALITY_COLUMNS)
    else:
        quality = pd.read_parquet(args.quality or results / "quality.parquet")
    if args.profiling is None:
        profiling = pd.read_parquet(results / "profiling.parquet")
    elif args.profiling:
        profiling = pd.concat([pd.read_parquet(f) for f in args.profiling], ignore_index=True)
    else:
        profiling = pd.DataFrame(columns=PROFILING_COLUMNS)
    r = Results.from_frames(cfg, quality, profiling, pd.concat(logs, ignore_index=True) if logs else None)
    r.checkpoints, r.vae = args.checkpoints, args.vae
    if args.efficiency_mode not in set(r.profiling.get("mode", [])) | {"reference"}:
        raise ValueError(f"--efficiency-mode {args.efficiency_mode!r}: no profiling rows in that mode")
    sections = report(r, args.tables_dir or results / "tables", args.figures_dir, args.report_dir or results,
                      args.efficiency_mode, only=args.only)
    if not sections:
        print(f"variant report: wrote {args.only}")
        return 0
    status = sections[0].frame["status"].value_counts().to_dict()
    print(f"variant report: {len(TABLES)} tables, {len(FIGURES)} figures, paper check "
          f"{status or 'empty'} -> {Path(args.report_dir or results) / 'paper_check.md'}")
    return 0
