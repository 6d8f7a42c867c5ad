"""Sample images as figures: Figures 4 and 6 (`variant grid`: one row per configuration,
read from the packed files of `variant sample`) and the images of Figure 7 (`fixed_samples`:
a few images of fixed classes, drawn from one checkpoint with a fixed seed)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from variant import names
from variant.models.checkpoint import check_profile, load_models
from variant.stages.sample import class_sorted, make_sampler, sample_shard, shard_seed
from variant.util.atomic import save_figure
from variant.util.files import check_images, open_npz


def fixed_samples(params: dict, var_path, vae_path, config: str, classes: list[int], per_class: int,
                  device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A few images of the given classes (Figure 7), seeded as shard 0: the same seed for
    every checkpoint, so images of two checkpoints differ only by the weights."""
    device = device or params["device"]
    var, vae = load_models(var_path, vae_path, device)
    check_profile(var, vae, params, var_path, vae_path)
    labels = np.repeat(np.asarray(classes), per_class)
    images = sample_shard(make_sampler(var, vae, device), names.subnet_of(config, var.depth, var.num_scales),
                          labels, shard_seed(params["sample"]["seed"], 0), params["sample"], device)
    return images, labels


def grid_rows(npz_files: list[str], per_row: int = 8) -> list[list[np.ndarray]]:
    """Per file, the first image in generation order of each of its first `per_row` classes,
    so rows compare the same class (and seed position) whatever order a file stores them in.
    Every file is read before anything is drawn."""
    rows = []
    for path in npz_files:
        fix = "pass a packed file of `variant sample`"
        with open_npz(path, "sample file", fix, required=["arr_0", "labels"]) as f:
            order = class_sorted(f, path)
            images, labels = check_images(f["arr_0"], path, "sample file", fix), f["labels"][order]
        if len(labels) != len(images):
            raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels; {fix}")
        classes = np.unique(labels)[:per_row]
        rows.append([images[order[np.flatnonzero(labels == c)[0]]] for c in classes])
    return rows


def plot_grid(rows: list[list[np.ndarray]], titles: list[str]):
    """One row of images per configuration, its title on the left."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.1 * n_cols + 1.2, 1.1 * len(rows)), squeeze=False)
    for i, (row, title) in enumerate(zip(rows, titles)):
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j], interpolation="nearest")
        axes[i][0].text(-0.1, 0.5, title, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.15, wspace=0.05, hspace=0.05)
    return fig


def sample_grid(npz_files: list[str], titles: list[str], out_stem: str | os.PathLike, per_row: int = 8):
    """Figures 4 and 6: `out_stem`.pdf and .png, one row per configuration."""
    import matplotlib.pyplot as plt

    fig = plot_grid(grid_rows(npz_files, per_row), titles)
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        save_figure(fig, out_stem.with_suffix(f".{ext}"), dpi=150, bbox_inches="tight")
    plt.close(fig)


def _main(a) -> int:
    titles = a.titles or [Path(p).stem for p in a.samples]
    if len(titles) != len(a.samples):
        raise ValueError(f"{len(a.samples)} sample files but {len(titles)} titles")
    sample_grid(a.samples, titles, a.out)
    return 0


def add_parser(sub):
    p = sub.add_parser("grid")   # its one-line help: variant.cli.COMMANDS
    p.add_argument("samples", nargs="+", help=".npz files from `variant sample`")
    p.add_argument("--titles", nargs="*", help="one row title per sample file (default: the file names)")
    p.add_argument("--out", required=True, help="output path without extension (writes .pdf and .png)")
    p.set_defaults(func=_main)
