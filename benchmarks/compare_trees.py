"""Join compare_trees.sh's row sets and print new/old latency per (mode, config, batch).

    python benchmarks/compare_trees.py ROWS_DIR OUT.parquet
"""
import sys
from pathlib import Path

import pandas as pd

from variant.util.atomic import write_parquet


def main(rows_dir: str, out: str) -> None:
    frames = []
    for f in sorted(Path(rows_dir).glob("*_[0-9].parquet")):
        tree, round_ = f.stem.rsplit("_", 1)
        frames.append(pd.read_parquet(f).assign(tree=tree, round=int(round_)))
    rows = pd.concat(frames, ignore_index=True)
    write_parquet(rows, out)
    keys = ["mode", "config", "batch"]
    best = rows.groupby(keys + ["tree"])["latency_s"].min().unstack("tree")
    best["new/old"] = best["new"] / best["old"]
    spread = rows.groupby(keys + ["tree"])["latency_s"].agg(lambda s: s.max() / s.min() - 1).unstack("tree")
    best["round spread old"], best["round spread new"] = spread["old"], spread["new"]
    print(best.round(4).to_string())


if __name__ == "__main__":
    main(*sys.argv[1:3])
