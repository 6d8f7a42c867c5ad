"""The sample stage: `per_class` images of every class for one (checkpoint, configuration).

Images are generated in shards of `shard_size`, class-major. Each shard has its own
generator seeded from (seed, shard index), so any shard regenerates byte-identically on
the same software and device, shards can run as separate jobs, and a restarted job skips
the shards already on disk. Images are stored as 8-bit RGB (what a PNG holds) in the ADM
evaluation format: an .npz with `arr_0` (N, H, W, 3) uint8, plus `labels`.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .atomic import atomic_path
from .checkpoint import load_models, sha256_file
from .config import load_params
from .sampler import LeanSampler, generate
from .supernet import Subnet

CONFIG_RE = re.compile(r"^(full|d(?P<d>\d+)_N(?P<n>\d+)|d(?P<ds>\d+)_S(?P<s>\d+(?:-\d+)*))$")


def parse_config(name: str, depth: int, num_scales: int) -> Subnet:
    """`full`, `d16_N6` (Eq. 3 zones) or `d16_S1-2-3` (subnet on explicit 1-based scales)."""
    m = CONFIG_RE.match(name)
    if not m:
        raise ValueError(f"configuration {name!r} is not `full`, `d<d>_N<N>` or `d<d>_S<k>-<k>...`")
    if name == "full":
        return Subnet.full(depth, num_scales)
    if m["d"]:
        return Subnet(depth, int(m["d"]), int(m["n"]), num_scales)
    return Subnet.on_scales(depth, int(m["ds"]), {int(k) - 1 for k in m["s"].split("-")}, num_scales)


def shard_seed(seed: int, shard: int) -> int:
    """Independent, reproducible seed per shard (not seed + shard, which would overlap runs)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{shard}".encode()).digest()[:8], "little") >> 1


def class_labels(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, rounded to nearest."""
    return images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_npz(path: Path, **arrays):
    """Atomic write, so a killed job never leaves a shard that looks finished."""
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)


def load_shard(path: Path, expected: int) -> dict:
    try:
        with np.load(path) as f:
            shard = {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"{path}: corrupt sample shard ({e}); delete it to regenerate") from e
    if shard["arr_0"].shape[0] != expected:
        raise ValueError(f"{path}: holds {shard['arr_0'].shape[0]} images, expected {expected}; "
                         "delete it to regenerate")
    return shard


def make_sampler(var, vae, device):
    """The lean sampler on a GPU (bf16, preallocated cache); the reference one on a CPU,
    where float32 keeps the tiny profile exact. Both take the same arguments."""
    if torch.device(device).type == "cuda":
        return LeanSampler(var, vae).generate
    return lambda *a, **k: generate(var, vae, *a, **k)


@torch.no_grad()
def sample_shard(sampler, subnet, labels: np.ndarray, seed: int, cfg: dict, device) -> np.ndarray:
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, len(labels), cfg["batch_size"]):
        lab = torch.as_tensor(labels[i:i + cfg["batch_size"]], device=device)
        res = sampler(lab, subnet, cfg=cfg["cfg"], top_k=cfg["top_k"], top_p=cfg["top_p"], generator=gen)
        out.append(to_uint8(res.images))
    return np.concatenate(out)


def run_sample(params: dict, var_path, vae_path, config: str, out: str | os.PathLike,
               shards: list[int] | None = None, device: str | None = None) -> Path:
    """Generate the shards (all, or the listed ones) of one configuration, then, once every
    shard exists, pack them into `out`."""
    device = device or params["device"]
    cfg = params["sample"]
    out = Path(out)
    shard_dir = out.with_suffix("")          # samples/{run}/{config}/shard-00000.npz
    var, vae = load_models(var_path, vae_path, device)
    sampler = make_sampler(var, vae, device)
    subnet = parse_config(config, var.depth, var.num_scales)
    labels = class_labels(var.num_classes if params["data"]["num_classes"] is None
                          else params["data"]["num_classes"], cfg["per_class"])
    n_shards = -(-len(labels) // cfg["shard_size"])
    todo = range(n_shards) if shards is None else shards
    t0 = time.time()
    for s in tqdm(todo, desc=f"sample {config}", unit="shard", disable=None):
        path = shard_dir / f"shard-{s:05d}.npz"
        lab = labels[s * cfg["shard_size"]:(s + 1) * cfg["shard_size"]]
        if path.exists():
            load_shard(path, len(lab))        # finished earlier: check it, don't redo it
            continue
        images = sample_shard(sampler, subnet, lab, shard_seed(cfg["seed"], s), cfg, device)
        save_npz(path, arr_0=images, labels=lab)
    missing = [s for s in range(n_shards) if not (shard_dir / f"shard-{s:05d}.npz").exists()]
    if missing:
        print(f"{len(missing)} of {n_shards} shards still to do; not packing {out}")
        return out
    parts = [load_shard(shard_dir / f"shard-{s:05d}.npz",
                        len(labels[s * cfg["shard_size"]:(s + 1) * cfg["shard_size"]])) for s in range(n_shards)]
    save_npz(out, arr_0=np.concatenate([p["arr_0"] for p in parts]),
             labels=np.concatenate([p["labels"] for p in parts]),
             checkpoint_sha256=np.array(sha256_file(var_path)), config=np.array(config),
             seed=np.array(cfg["seed"]))
    print(f"{out}: {len(labels)} images of {config} in {time.time() - t0:.1f}s")
    return out


def add_parser(sub):
    p = sub.add_parser("sample", help="generate per_class images of every class for one configuration")
    p.add_argument("--profile")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--var", required=True, help="VAR checkpoint (reference key layout)")
    p.add_argument("--vae", required=True, help="VQVAE checkpoint")
    p.add_argument("--config", required=True, help="full | d<d>_N<N> | d<d>_S<k>-<k>...")
    p.add_argument("--out", required=True, help="the packed .npz")
    p.add_argument("--shards", type=int, nargs="*", help="only these shard indices (for job arrays)")
    p.add_argument("--device")
    p.set_defaults(func=lambda a: run_sample(load_params(a.params, a.profile), a.var, a.vae, a.config,
                                             a.out, a.shards, a.device) and 0)
    add_grid_parser(sub)


def sample_grid(npz_files: list[str], titles: list[str], out_stem: str | os.PathLike, per_row: int = 8):
    """Figures 4 and 6: one row per configuration, the first image of `per_row` classes,
    so rows compare the same class (and seed position) across configurations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for path in npz_files:
        with np.load(path) as f:
            images, labels = f["arr_0"], f["labels"]
        classes = np.unique(labels)[:per_row]
        rows.append([images[np.flatnonzero(labels == c)[0]] for c in classes])
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.1 * n_cols + 1.2, 1.1 * len(rows)), squeeze=False)
    for i, (row, title) in enumerate(zip(rows, titles)):
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
        axes[i][0].text(-0.1, 0.5, title, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.15, wspace=0.05, hspace=0.05)
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        fig.savefig(out_stem.with_suffix(f".{ext}"), dpi=150, bbox_inches="tight")
    plt.close(fig)


def _grid_main(a) -> int:
    titles = a.titles or [Path(p).stem for p in a.samples]
    if len(titles) != len(a.samples):
        raise ValueError(f"{len(a.samples)} sample files but {len(titles)} titles")
    sample_grid(a.samples, titles, a.out)
    return 0


def add_grid_parser(sub):
    p = sub.add_parser("grid", help="a figure of sample images, one row per configuration")
    p.add_argument("samples", nargs="+", help=".npz files from `variant sample`")
    p.add_argument("--titles", nargs="*")
    p.add_argument("--out", required=True, help="output path without extension (writes .pdf and .png)")
    p.set_defaults(func=_grid_main)
