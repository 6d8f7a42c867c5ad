"""Compare two runs of one profile's results: every numeric and provenance column of
quality.parquet and profiling.parquet, row by row (joined on their keys).

    python benchmarks/compare_results.py BEFORE/results/tiny AFTER/results/tiny
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = {"quality": ["run", "config"], "profiling": ["mode", "config", "batch"]}
# what differs between two runs by construction: time, the code's commit, the machine's load
EXPECTED_TO_DIFFER = {"latency_s", "latency_min_s", "latency_max_s", "images_per_s", "tflop_per_s",
                      "git_commit"}


def compare(before: Path, after: Path) -> bool:
    same = True
    for name, keys in KEYS.items():
        a, b = pd.read_parquet(before / f"{name}.parquet"), pd.read_parquet(after / f"{name}.parquet")
        rows = a.merge(b, on=keys, how="outer", suffixes=("_before", "_after"), indicator=True)
        unmatched = int((rows["_merge"] != "both").sum())
        print(f"{name}: {len(a)} rows before, {len(b)} after, {unmatched} without a partner")
        same &= unmatched == 0
        for col in [c for c in a.columns if c in b.columns and c not in keys]:
            x, y = rows[f"{col}_before"], rows[f"{col}_after"]
            equal = bool(((x == y) | (x.isna() & y.isna())).all())
            note = "" if equal else f"  differs in {int((x != y).sum())} rows, e.g. {x.iloc[0]!r} -> {y.iloc[0]!r}"
            if not equal and x.dtype.kind in "fi":
                note += f", max |diff| {np.nanmax(np.abs(x - y)):.3g}"
            print(f"  {col:24s} {'equal' if equal else 'DIFFERS'}{note}")
            same &= equal or col in EXPECTED_TO_DIFFER
    return same


if __name__ == "__main__":
    sys.exit(0 if compare(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
