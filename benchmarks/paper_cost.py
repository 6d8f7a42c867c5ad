"""Projected cost of the paper profile's whole grid: GPU-hours per stage and disk.

The grid (runs, configurations, shards, phases) comes from params.yaml through variant.dag;
every rate and byte count comes from measurement rows: `variant bench train` throughput,
generation/Inception throughput, and the rehearsal's per-job rows (one GPU, the paper's
shapes with the counts cut). Nothing is measured here.

    python benchmarks/paper_cost.py --train results/benchmarks/train_h200.parquet \\
        --generation results/benchmarks/generation_h100.parquet \\
        --stages results/rehearsal/device/*.jsonl --gpus 8 --out results/rehearsal/paper_cost.parquet
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from variant import dag, names
from variant.config import load_params, phases_of
from variant.costmodel import VARShape, parameter_count
from variant.training.schedule import run_probability
from variant.util.atomic import write_parquet

sys.path.insert(0, str(Path(__file__).parent))   # train_projection is a sibling script
from train_projection import IMAGENET_TRAIN, TOKENS_PER_IMAGE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GB, H = 1e9, 3600.0
COLUMNS = ["stage", "jobs", "gpu_hours", "cpu_hours", "disk_gb", "source"]
NEEDS = {"train": ["n_gpus", "depth", "batch_per_gpu", "subnet_prob", "tokens_per_s", "oom"],
         "generation": ["what", "subnet_depth", "bridge", "seeded", "images_per_s"],
         "stages": ["stage", "job", "rc", "wall_s", "bytes_written", "gpu"]}


class InputError(Exception):
    """An input file is missing, empty or lacks the rows a stage needs (one line, exit 2)."""


def read_rows(path, kind: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    df = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_parquet(path)
    if df.empty:
        raise InputError(f"{path}: no rows")
    if missing := [c for c in NEEDS[kind] if c not in df.columns]:
        raise InputError(f"{path}: no column {', '.join(missing)} (not {kind} rows?)")
    df.attrs["path"] = str(path)   # so that a missing row can name its file
    return df


def scaled_tps(train: pd.DataFrame, depth: int, micro_batch: int, gpus: int) -> tuple[dict, dict]:
    """{subnet_prob: tokens/s on `gpus`} and {subnet_prob: scaling efficiency}, from the 1-
    and 2-GPU rows. A ring all-reduce moves 2(n-1)/n of the gradients per GPU, so the overhead seen
    at n=2 (factor 1) is scaled by 2(n-1)/n: an extrapolation from 2 GPUs."""
    ok = train[(train.depth == depth) & (train.batch_per_gpu == micro_batch) & ~train.oom.astype(bool)]
    best = ok.groupby(["n_gpus", "subnet_prob"]).tokens_per_s.max()   # fastest measured setting
    if not {(1, 0.0), (1, 1.0), (2, 0.0), (2, 1.0)} <= set(best.index):
        raise InputError(f"{train.attrs.get('path', 'train rows')}: no rows of depth {depth}, "
                         f"batch_per_gpu {micro_batch} at subnet_prob 0 and 1 on 1 and 2 GPUs")
    tps, effs = {}, {}
    for p in (0.0, 1.0):
        eff2 = best[(2, p)] / (2 * best[(1, p)])
        effs[p] = 1 / (1 + (1 / eff2 - 1) * 2 * (gpus - 1) / gpus)
        tps[p] = best[(1, p)] * gpus * effs[p]
    return tps, effs


def train_gpu_hours(run: str, phases, tps: dict, gpus: int, images=IMAGENET_TRAIN) -> float:
    """GPU-hours of one training: an epoch at p costs (1-p) full steps and p subnet steps."""
    spec = names.parse_run(run)
    sec = sum(images * TOKENS_PER_IMAGE * ((1 - p) / tps[0.0] + p / tps[1.0])
              for p in (run_probability(spec, e, phases) for e in range(sum(phases))))
    return gpus * sec / H


def layer_tokens(P: dict, config: str) -> int:
    """Token-layers one image's sampling runs (a layer at scale k sees p_k^2 tokens)."""
    sub = names.subnet_of(config, dag.depth(P), dag.num_scales(P))
    return sum(len(sub.layers_at(k)) * p * p for k, p in enumerate(P["model"]["patch_nums"]))


def seconds_per_image(P: dict, gen: pd.DataFrame):
    """(config -> generation s/image, worst relative residual of the fit): the seeded row of
    that (d, N) where measured, else a straight line in layer_tokens through the measured
    rows (its intercept is the per-image cost every configuration shares: VQVAE decode)."""
    rows = gen[(gen.what == "generate+decode") & (gen.seeded == True)]  # noqa: E712
    if len(rows) < 2:
        raise InputError(f"{gen.attrs.get('path', 'generation rows')}: "
                         "fewer than two seeded generate+decode rows")
    K = dag.num_scales(P)
    measured = {names.grid_config(int(r.subnet_depth), int(r.bridge), K): 1 / r.images_per_s
                for r in rows.itertuples()}
    x, y = np.array([layer_tokens(P, c) for c in measured]), np.array(list(measured.values()))
    slope, icpt = np.polyfit(x, y, 1)
    resid = float(np.abs((icpt + slope * x) / y - 1).max())
    return (lambda c: measured.get(c, icpt + slope * layer_tokens(P, c))), resid


def ok_rows(stages: pd.DataFrame, stage: str, job: str = "", has: bool = True) -> pd.DataFrame:
    """rc=0 rows of `stage` whose job does (has) or does not contain `job`."""
    r = stages[(stages.stage == stage) & (stages.rc == 0)]
    return r[r.job.fillna("").str.contains(job, regex=False) == has] if job else r


def med(rows: pd.DataFrame, col: str) -> float:
    return float(rows[col].median()) if len(rows) else np.nan


def on_gpu(rows: pd.DataFrame) -> bool:
    return bool(rows.gpu.fillna("").astype(bool).any())


def stage_row(stage: str, jobs: int, rows: pd.DataFrame, sec_per_job: float, bytes_per_job: float, source: str):
    """`jobs` jobs of `sec_per_job` s and `bytes_per_job` bytes, projected from `rows`. A job
    that ran on a GPU holds it for its whole wall: GPU-hours, else CPU-job hours."""
    if rows.empty:
        return (stage, jobs, np.nan, np.nan, np.nan, "not measured (no rc=0 row)")
    h = jobs * sec_per_job / H
    return (stage, jobs, h if on_gpu(rows) else 0.0, 0.0 if on_gpu(rows) else h, jobs * bytes_per_job / GB, source)


def stored_samples(P: dict, images: int) -> int:
    """Token samples the tokenize stage stores: one per image, view and flip (its default
    --views is the longest schedule's epochs under RandAugment, as in variant.stages.tokenize)."""
    aug = P["train"]["augment"]
    views = max(sum(phases_of(P, int(d))) for d in P["train"]["phases"]) if aug.get("randaugment") else 1
    return images * views * (2 if aug.get("hflip", True) else 1)


def checkpoint_bytes(P: dict) -> int:
    """fp32 weights of the profile's VAR (the checkpoint format keeps parameters as trained)."""
    m = P["model"]
    shape = VARShape.from_depth(dag.depth(P), patch_nums=tuple(m["patch_nums"]), vocab=m["vae"]["vocab_size"],
                                cvae=m["vae"]["z_channels"], num_classes=P["data"]["num_classes"])
    return 4 * parameter_count(shape)


def setup_rows(P, R, stages, rehearsal_images) -> list:
    """fetch and tokenize. No encode-rate row exists, so tokenize scales its whole wall
    (fixed costs included: an upper bound) by the samples stored."""
    fetch, standins, tok = ok_rows(stages, "fetch"), ok_rows(stages, "stand-ins"), ok_rows(stages, "tokenize")
    n, r = stored_samples(P, IMAGENET_TRAIN), stored_samples(R, rehearsal_images)
    return [stage_row("fetch", 1, fetch, med(fetch, "wall_s"), standins.bytes_written.max(),
                      "fetch rows (files placed by stand-ins: no download); disk: stand-ins row"),
            stage_row("tokenize", 1, tok, med(tok, "wall_s") * n / r, med(tok, "bytes_written") * n / r,
                      f"tokenize rows x {n:,} / {r:,} samples (image x view x flip); an upper bound")]


def train_rows(P, train, gpus) -> list:
    tps, eff = scaled_tps(train, dag.depth(P), P["train"]["micro_batch"], gpus)
    runs, ckpt = dag.trained_runs(P), checkpoint_bytes(P)
    snaps = sum(len(dag.snapshot_epochs(P, r)) for r in runs)
    hours = sum(train_gpu_hours(r, phases_of(P, names.parse_run(r).subnet_depth), tps, gpus) for r in runs)
    return [("train", len(runs), hours, 0.0, (len(runs) + snaps) * ckpt / GB,
             f"train rows at p=0 and 1; {gpus} GPUs extrapolated from 2 (efficiency {eff[0.0]:.3f} / "
             f"{eff[1.0]:.3f}); disk: {len(runs)} checkpoints + {snaps} snapshots of {ckpt / GB:.2f} GB"),
            ("train resume state", 0, 0.0, 0.0, 3 * ckpt / GB,
             "derived: fp32 weights + 2 AdamW moments, per run in flight; removed on publish")]


def sample_rows(P, R, gen, stages) -> list:
    """A shard job is a fixed cost (load, hash, build the model) plus its images at the
    generation rate; the rehearsal's shard rows give the fixed cost. Shards are temporary:
    the pack job's file is what stays."""
    configs = [c for cfgs in dag.runs_and_configs(P).values() for c in cfgs]
    spi, resid = seconds_per_image(P, gen)
    (per_shard, shards), (r_shard, r_shards) = dag.shard_layout(P), dag.shard_layout(R)
    rows, pack = ok_rows(stages, "sample", "shards="), ok_rows(stages, "sample", "shards=", has=False)
    fixed = float(np.median([w - r_shard * spi(j.split()[0].removeprefix("config="))
                             for w, j in zip(rows.wall_s, rows.job)])) if len(rows) else np.nan
    sec = fixed + per_shard * float(np.mean([spi(c) for c in configs]))
    scale = per_shard * shards / (r_shard * r_shards)   # images a configuration: paper / rehearsal
    return [stage_row("sample shards", shards * len(configs), rows, sec, 0.0,
                      f"H100 generation rows (seeded; unmeasured (d, N) on their line, within {resid:.1%}) "
                      f"+ {fixed:.0f} s a job fixed, from the sample shard rows"),
            stage_row("sample pack", len(configs), pack, med(pack, "wall_s") * scale,
                      med(pack, "bytes_written") * scale,
                      f"sample pack rows x {per_shard * shards:,} / {r_shard * r_shards:,} images")]


def feature_rows(P, R, gen, stages, reference_images, rehearsal_reference) -> list:
    """reference-stats and evaluate: the measured job, plus the Inception features of the
    images the paper has beyond the rehearsal's."""
    feat = gen[gen.what == "inception features"].images_per_s
    rate = float(feat.iloc[0]) if len(feat) else np.nan
    configs = sum(len(c) for c in dag.runs_and_configs(P).values())
    n, r = int(np.prod(dag.shard_layout(P))), int(np.prod(dag.shard_layout(R)))
    out = []
    for stage, jobs, n_meas, n_paper in (("reference-stats", 1, rehearsal_reference, reference_images),
                                         ("evaluate", configs, r, n)):
        rows = ok_rows(stages, stage) if len(feat) else stages.iloc[:0]
        out.append(stage_row(stage, jobs, rows, med(rows, "wall_s") + (n_paper - n_meas) / rate,
                             med(rows, "bytes_written"),
                             f"{stage} rows + {n_paper - n_meas:,} more images at the H100 inception features rate"))
    return out


# the DAG's last jobs: one per report item, the paper check, the sample grids, collect, findings
REPORT_JOBS = len(dag.REPORT_ITEMS) + 1 + len(dag.SAMPLE_GRIDS) + 2


def report_row(rep: pd.DataFrame) -> tuple:
    """The measured report-side jobs at their median walls (a GPU one: fig7 samples from checkpoints)."""
    if rep.empty:
        return ("collect, report", REPORT_JOBS, np.nan, np.nan, np.nan, "not measured (no rc=0 row)")
    keys = [c for c in ("stage", "job", "out") if c in rep]   # a grid job is named by its out only
    per = rep.groupby(keys).agg(wall=("wall_s", "median"), nbytes=("bytes_written", "median"),
                                gpu=("gpu", lambda g: g.fillna("").astype(bool).any()))
    missing = REPORT_JOBS - len(per)
    return ("collect, report", REPORT_JOBS, per.wall[per.gpu].sum() / H, per.wall[~per.gpu].sum() / H,
            per.nbytes.sum() / GB, f"collect, findings, grid and report rows of {len(per)} of {REPORT_JOBS} jobs"
            + (f" (the other {missing} not measured)" if missing else ""))


def cost_table(P, R, train, gen, stages, gpus, rehearsal_images, reference_images, rehearsal_reference):
    """The table: P the paper's params, R the rehearsal's (the counts its stage rows ran at)."""
    prof = ok_rows(stages, "profile")
    rows = (setup_rows(P, R, stages, rehearsal_images) + train_rows(P, train, gpus)
            + sample_rows(P, R, gen, stages) + feature_rows(P, R, gen, stages, reference_images, rehearsal_reference)
            + [stage_row("profile", 1, prof, med(prof, "wall_s"), med(prof, "bytes_written"), "profile rows"),
               report_row(pd.concat([ok_rows(stages, st) for st in ("report", "grid", "collect", "findings")]))])
    df = pd.DataFrame(rows, columns=COLUMNS)
    total = ("total", int(df.jobs.sum()), df.gpu_hours.sum(), df.cpu_hours.sum(), df.disk_gb.sum(),
             "sum of the rows above (a row not measured counts 0)")
    return pd.concat([df, pd.DataFrame([total], columns=COLUMNS)], ignore_index=True)


def markdown(df: pd.DataFrame, gpus: int) -> str:
    f = lambda x, d: "not measured" if pd.isna(x) else f"{x:,.{d}f}"  # noqa: E731
    lines = ["| stage | jobs | GPU-hours | CPU-job hours | disk (GB) | from |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.jobs:,} | {f(r.gpu_hours, 2)} | {f(r.cpu_hours, 2)} | {f(r.disk_gb, 2)} | {r.source} |"
              for r in df.itertuples()]
    gpu_h = df.gpu_hours.iloc[-1]
    return "\n".join(lines) + f"\n\n{gpu_h:,.0f} GPU-hours = {gpu_h / gpus / 24:.1f} days on {gpus} GPU(s) kept busy.\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="`variant bench train` rows (tokens/s)")
    ap.add_argument("--generation", required=True, help="benchmarks/generation_throughput.py rows")
    ap.add_argument("--stages", nargs="+", required=True, help="per-job rows (.jsonl or .parquet)")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--out", default=None, help="parquet of the table (written atomically)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--rehearsal-images", type=int, default=1000,
                    help="training images the rehearsal tokenized (stand-ins: 1 per class)")
    ap.add_argument("--rehearsal-reference-images", type=int, default=1000, help="its reference batch's images")
    ap.add_argument("--reference-images", type=int, default=10_000, help="the paper's reference batch (ADM)")
    a = ap.parse_args(argv)
    try:
        train, gen = read_rows(a.train, "train"), read_rows(a.generation, "generation")
        stages = pd.concat([read_rows(s, "stages") for s in a.stages], ignore_index=True)
        P, R = (load_params(a.params, prof, {"data.root": "unused"}) for prof in ("paper", "rehearsal"))
        df = cost_table(P, R, train, gen, stages, a.gpus, a.rehearsal_images, a.reference_images,
                        a.rehearsal_reference_images)
    except InputError as e:
        print(f"paper_cost: {e}", file=sys.stderr)
        return 2
    print(markdown(df, a.gpus))
    if a.out:
        write_parquet(df, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
