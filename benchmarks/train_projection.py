"""Projected wall time of a progressive training schedule from measured throughput.

Reads `variant bench train` rows (results/benchmarks/train_<gpu>.parquet): tokens/s of
the same configuration at subnet probability 0 (every step full depth) and 1 (every step
the subnet). A step at probability p costs (1 - p) full steps and p subnet steps on
average, so one epoch at p takes images x L x ((1 - p) / tps_0 + p / tps_1). The
schedule's p per epoch is Algorithm 1's (the progressive run's, variant.stages.train). Multi-GPU
time divides by the GPU count times a scaling efficiency (measured by the same bench
under torchrun; 1.0 assumes perfect scaling).

    python benchmarks/train_projection.py results/benchmarks/train_nvidia-h100-80gb-hbm3.parquet \\
        --phases 5 15 5 --gpus 8 --efficiency 0.97
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from variant.names import parse_run
from variant.training.schedule import run_probability

IMAGENET_TRAIN = 1_281_167
TOKENS_PER_IMAGE = 680   # VAR-d30 at 256 px: sum of (1,2,3,4,5,6,8,10,13,16)^2


def project(tps_full: float, tps_sub: float, phases, images=IMAGENET_TRAIN, gpus=1, efficiency=1.0):
    """Hours of the schedule, and the per-epoch (epoch, p, hours) rows."""
    spec = parse_run("progressive_d16")   # the schedule depends only on the phase lengths
    rows = []
    for epoch in range(sum(phases)):
        p = run_probability(spec, epoch, phases)
        sec = images * TOKENS_PER_IMAGE * ((1 - p) / tps_full + p / tps_sub) / (gpus * efficiency)
        rows.append((epoch, p, sec / 3600))
    return sum(h for *_, h in rows), rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parquet")
    ap.add_argument("--phases", type=int, nargs=3, default=[5, 15, 5], help="Table 7: d16 = 5 15 5")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--efficiency", type=float, default=1.0, help="multi-GPU scaling efficiency")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--images", type=int, default=IMAGENET_TRAIN)
    a = ap.parse_args(argv)
    df = pd.read_parquet(a.parquet)
    df = df[(df.n_gpus == 1) & (df.depth == 30) & (df.dtype == a.dtype) & ~df.oom.astype(bool)]
    key = ["batch_per_gpu", "accum", "attention", "activation_checkpointing", "compiled"]
    best = None
    for cfg, g in df.groupby(key):
        by_p = g.set_index("subnet_prob").tokens_per_s
        if 0.0 in by_p and 1.0 in by_p:
            hours, rows = project(by_p[0.0], by_p[1.0], a.phases, a.images, a.gpus, a.efficiency)
            print(f"{dict(zip(key, cfg))}: p=0 {by_p[0.0]:,.0f} tok/s, p=1 {by_p[1.0]:,.0f} tok/s "
                  f"-> {hours:,.1f} h on {a.gpus} GPU(s)")
            if best is None or hours < best[0]:
                best = (hours, cfg, rows)
    if best is None:
        print(f"{a.parquet}: no configuration measured at both subnet_prob 0 and 1", file=sys.stderr)
        return 1
    hours, cfg, rows = best
    print(f"best: {hours:,.1f} h = {hours / 24:.2f} days for phases {a.phases} "
          f"({a.images:,} images/epoch, {a.gpus} GPU(s), efficiency {a.efficiency})")
    for epoch, p, h in rows:
        print(f"  epoch {epoch + 1:2d}  p={p:.3f}  {h:5.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
