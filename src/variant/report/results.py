"""One profile's result rows, ready to look up: quality rows by (run, configuration),
profiling rows by (mode, subnet depth, bridge, batch), training logs.

Inputs are the contract's parquet files (docs/CONTRACTS.md), as frames, each filtered to the
active profile. A configuration that was not run has no row: its lookup returns None and its
cell stays empty, it is never filled in.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from variant import dag, names
from variant.costmodel import VARShape

# Columns of the result files (docs/CONTRACTS.md), for an input that an output does not read.
QUALITY_COLUMNS = ["run", "config", "subnet_depth", "bridge", "scales", "fid", "isc_mean", "isc_std",
                   "precision", "recall", "num_samples", "profile", "config_hash", "checkpoint_sha256",
                   "git_commit", "seed", "device"]
PROFILING_COLUMNS = ["gpu", "mode", "depth", "subnet_depth", "bridge", "batch", "memory_cap_gib", "latency_s",
                     "peak_mib", "kv_mib", "params_mib", "images_per_s", "oom", "profile"]


def var_shape(cfg: dict) -> VARShape:
    """The profile's VAR as the cost model sees it (released models: width 64*D)."""
    model, var = cfg["model"], cfg["model"]["var"]
    kw = dict(patch_nums=tuple(model["patch_nums"]), vocab=model["vae"]["vocab_size"],
              cvae=model["vae"]["z_channels"], num_classes=cfg["data"]["num_classes"])
    if "width" in var:
        return VARShape(depth=var["depth"], width=var["width"], num_heads=var["num_heads"], **kw)
    return VARShape.from_depth(var["depth"], **kw)


def missing(v) -> bool:
    """No value: None or NaN (a string such as "OOM" is a value)."""
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def get(row: pd.Series | None, column: str):
    """A row's column, None without a row."""
    return None if row is None else row.get(column)


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
        """The run whose full network stands for d = D in Table 8 and Figure 5: the paper's
        d=30 row (1.96) is its trained d16 supernet's full network, not the pretrained VAR-d30."""
        return names.progressive(max(self.depths))

    def q(self, run: str, config: str) -> pd.Series | None:
        try:
            return self.quality.loc[(run, config)]
        except KeyError:
            return None

    def grid(self, run: str, d: int, n: int) -> pd.Series | None:
        """The quality row of subnet d with bridge n (n = K: the full network)."""
        return self.q(run, names.grid_config(d, n, self.K))

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
