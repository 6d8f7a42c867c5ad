"""The synthetic data set of the synthetic profiles (tiny, small), and the make-data split.

Two families of synthetic sets. `shapes` (the tiny and small profiles): one shape or
texture per class (disc, square, ring, ...) with per-image jitter of colour, position,
size, rotation/phase and noise. `layered` (harder): a class is a (shape, fill) pair, a
coarse outline filled with a fine texture, so the class needs both the first scales and
the last ones, and every image has structure at several sizes. Every image
is drawn from its own numpy Generator seeded by (seed, class, index), and rendered with
IEEE-exact arithmetic only (+, -, *, /, floor, comparisons; sin/cos only on scalars,
rounded), so the same seed gives the same pixels on any machine. Edges are anti-aliased
by our own 4x4 supersampling (coverage = count/16, exact) rather than a library's filter.

The set is written in torchvision's ImageFolder layout, root/<class>/<image>.png, which
variant.util.images reads.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from variant.util.atomic import write_text

CLASS_NAMES = ("disc", "square", "ring", "triangle", "hstripes",
               "vstripes", "checker", "cross", "dstripes", "blobs")
LAYERED_SHAPES = ("disc", "square", "ring", "triangle", "cross")
LAYERED_FILLS = ("solid", "hstripes", "vstripes", "checker", "dots")
FAMILIES = {"shapes": CLASS_NAMES,
            "layered": tuple(f"{s}-{f}" for s in LAYERED_SHAPES for f in LAYERED_FILLS)}
SUPERSAMPLE = 4
SPLITS = ("train", "eval")
EVAL_SEED_OFFSET = 1_000_003   # eval split seed = data.seed + this: disjoint from train

# -----------------------------------------------------------------------------
# rendering


def _cos_sin(angle):
    # rounded so that a last-bit difference between libms cannot reach the pixels
    return round(math.cos(angle), 9), round(math.sin(angle), 9)


def _stripes(t, period, phase):
    return np.floor(t / period + phase) % 2 == 0


def _checks(u, v, period, phase_u, phase_v):
    return (np.floor(u / period + phase_u) + np.floor(v / period + phase_v)) % 2 == 0


def _render_mask(name, x, y, draw):
    """Boolean mask of class `name` on the supersampled grid (x, y in [-1, 1])."""
    cx, cy = draw(-0.25, 0.25), draw(-0.25, 0.25)
    x, y = x - cx, y - cy
    # shapes turn freely; stripes and checks only tilt, so they keep their orientation class
    angle = draw(0, 2 * math.pi) if name in ("square", "triangle") else draw(-0.15, 0.15)
    if name == "dstripes":  # either diagonal, so that horizontal flips stay in the class
        angle += math.pi / 4 * (1 if draw(0, 1) < 0.5 else 3)
    c, s = _cos_sin(angle)
    u, v = c * x + s * y, c * y - s * x  # coordinates along and across the rotated axes
    if name == "disc":
        r = draw(0.3, 0.6)
        return x * x + y * y <= r * r
    if name == "square":
        h = draw(0.25, 0.5)
        return np.maximum(np.abs(u), np.abs(v)) <= h
    if name == "ring":
        r_out = draw(0.4, 0.7)
        r_in = r_out * draw(0.45, 0.7)
        d2 = x * x + y * y
        return (d2 <= r_out * r_out) & (d2 >= r_in * r_in)
    if name == "triangle":
        h = draw(0.2, 0.35)  # inradius; the three edges have normals 120 degrees apart
        mask = np.ones_like(x, dtype=bool)
        for k in range(3):
            ck, sk = _cos_sin(angle + k * 2 * math.pi / 3)
            mask &= ck * x + sk * y <= h
        return mask
    if name == "hstripes":
        return _stripes(v, draw(0.2, 0.4), draw(0, 1))
    if name in ("vstripes", "dstripes"):
        return _stripes(u, draw(0.2, 0.4), draw(0, 1))
    if name == "checker":
        return _checks(u, v, draw(0.3, 0.55), draw(0, 1), draw(0, 1))
    if name == "cross":
        arm, half = draw(0.08, 0.16), draw(0.4, 0.7)
        au, av = np.abs(u), np.abs(v)
        return ((au <= arm) & (av <= half)) | ((av <= arm) & (au <= half))
    if name == "blobs":
        r1, r2 = draw(0.2, 0.35), draw(0.2, 0.35)
        dx, dy = _cos_sin(draw(0, 2 * math.pi))
        sep = (r1 + r2) * draw(0.55, 0.8)  # each centre this far from the middle: apart
        x1, y1, x2, y2 = x - sep * dx, y - sep * dy, x + sep * dx, y + sep * dy
        return (x1 * x1 + y1 * y1 <= r1 * r1) | (x2 * x2 + y2 * y2 <= r2 * r2)
    raise ValueError(f"unknown class {name!r}")


def _fill_mask(name, x, y, draw):
    """Where a layered image's shape takes its second colour: a texture finer than any
    shape (periods of 0.12-0.2 of the half-width: 4-6 pixels at 64 px)."""
    angle = draw(-0.15, 0.15)
    c, s = _cos_sin(angle)
    u, v = c * x + s * y, c * y - s * x
    period = draw(0.12, 0.2)
    if name == "solid":
        return np.zeros_like(x, dtype=bool)
    if name == "hstripes":
        return _stripes(v, period, draw(0, 1))
    if name == "vstripes":
        return _stripes(u, period, draw(0, 1))
    if name == "checker":
        return _checks(u, v, period, draw(0, 1), draw(0, 1))
    if name == "dots":   # a square lattice of discs, radius a quarter of the period
        fu, fv = u / period + draw(0, 1), v / period + draw(0, 1)
        du, dv = fu - np.floor(fu) - 0.5, fv - np.floor(fv) - 0.5
        return du * du + dv * dv <= 0.0625
    raise ValueError(f"unknown fill {name!r}")


def _coverage(mask, image_size):
    return mask.reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE).mean(axis=(1, 3))


def _grid(image_size):
    n = image_size * SUPERSAMPLE
    grid = (np.arange(n) + 0.5) * (2.0 / n) - 1.0
    return np.meshgrid(grid, grid)  # x to the right, y downwards


def _to_uint8(img, rng, draw):
    img = img + draw(0.01, 0.05) * (2 * rng.random(img.shape) - 1)
    return np.clip(np.floor(img * 255 + 0.5), 0, 255).astype(np.uint8)


def render_layered(label: int, rng: np.random.Generator, image_size: int = 64) -> np.ndarray:
    """One image of the `layered` family: shape LAYERED_SHAPES[label // 5] on a background
    colour, filled with texture LAYERED_FILLS[label % 5] in two colours of its own."""
    def draw(lo, hi):
        return lo + (hi - lo) * rng.random()

    x, y = _grid(image_size)
    shape, fill = FAMILIES["layered"][label].split("-")
    inside = _render_mask(shape, x, y, draw)
    second = inside & _fill_mask(fill, x, y, draw)
    dark = np.array([draw(0.0, 0.3) for _ in range(3)])
    light = np.array([draw(0.6, 1.0) for _ in range(3)])
    mid = np.array([draw(0.3, 0.6) for _ in range(3)])
    bg, fg = (dark, light) if draw(0, 1) < 0.5 else (light, dark)
    a_in, a_second = _coverage(inside, image_size)[..., None], _coverage(second, image_size)[..., None]
    img = bg + a_in * (fg - bg) + a_second * (mid - fg)
    return _to_uint8(img, rng, draw)


def render_image(label: int, rng: np.random.Generator, image_size: int = 32, family: str = "shapes") -> np.ndarray:
    """One HxWx3 uint8 image of class `label` of `family`, all randomness from `rng.random()`."""
    if family == "layered":
        return render_layered(label, rng, image_size)

    def draw(lo, hi):
        return lo + (hi - lo) * rng.random()

    x, y = _grid(image_size)
    mask = _render_mask(CLASS_NAMES[label], x, y, draw)
    coverage = _coverage(mask, image_size)

    dark = np.array([draw(0.0, 0.35) for _ in range(3)])
    light = np.array([draw(0.55, 1.0) for _ in range(3)])
    bg, fg = (dark, light) if draw(0, 1) < 0.5 else (light, dark)
    img = bg + coverage[..., None] * (fg - bg)
    return _to_uint8(img, rng, draw)


def _write_class(args) -> bytes:
    """Render and write one class's images; their raw pixels, in index order."""
    out_dir, label, per_class, image_size, seed, family = args
    class_dir = Path(out_dir) / f"{label:03d}"
    class_dir.mkdir(parents=True, exist_ok=True)
    chunks = []
    for i in range(per_class):
        pixels = render_image(label, np.random.default_rng([seed, label, i]), image_size, family)
        chunks.append(pixels.tobytes())
        # compress_level=0 writes stored deflate blocks: the same bytes whatever zlib
        # build Pillow links (zlib and zlib-ng compress differently at other levels)
        Image.fromarray(pixels).save(class_dir / f"{i:05d}.png", format="PNG", compress_level=0)
    return b"".join(chunks)


def make_synthetic_dataset(out_dir, num_classes: int = 10, per_class: int = 500,
                           image_size: int = 32, seed: int = 0, family: str = "shapes") -> dict:
    """Write out_dir/<class:03d>/<i:05d>.png and out_dir/manifest.json; return the manifest.

    The manifest's sha256 covers the raw pixels (class-major, index order), so it is
    independent of how the PNGs are compressed.
    """
    if family not in FAMILIES:
        raise ValueError(f"data family must be one of {', '.join(FAMILIES)}, got {family!r}")
    names = FAMILIES[family]
    if not 1 <= num_classes <= len(names):
        raise ValueError(f"num_classes must be in 1..{len(names)} for the {family} family, got {num_classes}")
    if per_class < 1 or image_size < 4:
        raise ValueError(f"need per_class >= 1 and image_size >= 4, got {per_class}, {image_size}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; remove it or pick another directory")

    digest = hashlib.sha256()
    classes = [(out_dir, label, per_class, image_size, seed, family) for label in range(num_classes)]
    workers = min(num_classes, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if workers > 1 and num_classes * per_class >= 2000:   # a class a process: 50,000 images in seconds
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pixel_bytes = pool.map(_write_class, classes)
            for chunk in pixel_bytes:   # in class order, so the digest does not depend on workers
                digest.update(chunk)
    else:
        for args in classes:
            digest.update(_write_class(args))
    manifest = {
        "count": num_classes * per_class,
        "classes": list(names[:num_classes]),
        "per_class": per_class,
        "size": image_size,
        "seed": seed,
        "sha256": digest.hexdigest(),
    }
    if family != "shapes":   # the shapes family's manifests stay as they were
        manifest["family"] = family
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest

# -----------------------------------------------------------------------------
# the make-data command: one split of a profile


def _replace_dir(tmp: Path, out: Path):
    """Move the finished directory `tmp` to `out`, replacing whatever `out` was."""
    old = None
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError(f"{out} exists and is not a directory")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def split_seed(data: dict, split: str) -> int:
    """The eval split's seed is data.seed + EVAL_SEED_OFFSET: no eval image is drawn
    from a train image's generator."""
    return int(data["seed"]) + (EVAL_SEED_OFFSET if split == "eval" else 0)


def make_split(data: dict, split: str, out) -> dict:
    """Write split `train` or `eval` of params `data` (a synthetic profile's) to `out`,
    atomically: built beside it, then renamed over it. Returns the manifest."""
    if split not in SPLITS:
        raise ValueError(f"make-data: --split must be train or eval, got {split!r}")
    key = f"{split}_per_class"
    if not data.get(key):
        raise ValueError(f"params: data.{key} is not set")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)
        manifest = make_synthetic_dataset(tmp, num_classes=data["num_classes"], per_class=data[key],
                                          image_size=data["image_size"], seed=split_seed(data, split),
                                          family=data.get("family", "shapes"))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
