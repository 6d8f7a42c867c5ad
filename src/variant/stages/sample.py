"""The sample stage: `per_class` images of every class for one (checkpoint, configuration).

Images are generated in shards of `shard_size`, class-major. Each shard has its own
generator seeded from (seed, shard index), so any shard regenerates byte-identically on
the same software and device. With several shards, each is its own job (`--shards i`)
and a cheap `--pack` job checks and packs them; with one, a single job does both. A
restarted job skips the shards already on disk that carry its key (checkpoint sha256,
configuration, sampling knobs) and regenerates stale ones. Images are stored as 8-bit
RGB (what a PNG holds) in the ADM evaluation format: an .npz with `arr_0` (N, H, W, 3)
uint8, plus `labels`.

The packed file is not class-sorted: ADM's evaluator takes the Inception Score over
contiguous splits of 5,000 without shuffling, so a class-sorted file would score each
split on 100 of the 1,000 classes. `pack` writes images and labels in a seeded,
class-balanced order (pack_order; any contiguous split holds every class equally often,
give or take one) and records `sample_index`, each image's index in generation order:
`arr_0[np.argsort(sample_index)]` is the class-sorted order again (class_sorted).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from variant import dag, names, revisions
from variant.options import params_options
from variant.util.atomic import atomic_path
from variant.models.checkpoint import check_profile, load_models
from variant.config import load_params
from variant.util.devices import resolve_device
from variant.util.files import check_images, open_npz, require_file
from variant.util.hashing import sha256_cached
from variant.sampling import LeanSampler, Samples, generate
from variant.sampling.loop import decode_images


def shard_seed(seed: int, shard: int) -> int:
    """Independent, reproducible seed per shard (not seed + shard, which would overlap runs)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{shard}".encode()).digest()[:8], "little") >> 1


def class_labels(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def order_seed(seed: int) -> int:
    """The packed file's shuffle seed, from sample.seed (32 bits: RandomState's range)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:order".encode()).digest()[:4], "little")


def pack_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of class-sorted images whose contiguous runs are class-balanced:
    round r holds one image of every class (a seeded draw within the class), the classes in
    one seeded order every round, so any n consecutive images hold each class n/C times,
    rounded down or up. RandomState because its stream is frozen across NumPy versions."""
    rng = np.random.RandomState(seed)
    classes, cls = np.unique(labels, return_inverse=True)
    slot = rng.permutation(len(classes))[cls]           # a class's place within each round
    rank = np.empty(len(labels), np.int64)               # an image's round
    for c in range(len(classes)):
        idx = np.flatnonzero(cls == c)
        rank[idx] = rng.permutation(len(idx))
    return np.lexsort((slot, rank))


def class_sorted(f, path) -> np.ndarray:
    """Indices that put a sample file (`f`, the open .npz at `path`) back in generation
    order, class-sorted; files packed before the shuffle have no sample_index and are in
    that order already."""
    n = len(f["labels"])
    if "sample_index" not in f.files:
        return np.arange(n)
    index = f["sample_index"]
    if not np.array_equal(np.sort(index), np.arange(n)):
        raise ValueError(f"{path}: sample_index is not a permutation of its {n} images; "
                         "repack it (variant sample --pack)")
    return np.argsort(index)


def uint8_pixels(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, rounded to nearest, on their device."""
    return images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return uint8_pixels(images).cpu().numpy()


def save_npz(path: Path, **arrays):
    """np.savez's layout (uncompressed, zip64, what np.load and ADM's evaluator read), with
    a fixed zip timestamp so equal arrays give an equal file (np.savez stamps the time), and
    atomic, so a killed job never leaves a shard that looks finished."""
    with atomic_path(path, suffix=".tmp.npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for name, array in arrays.items():
            with z.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w",
                        force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def shard_key(params: dict, config: str, checkpoint_sha256: str) -> str:
    """What a shard's pixels depend on: the checkpoint, the configuration, every sampling
    knob and the sampler's revision. A shard left by another checkpoint or knob is stale, never reused."""
    knobs = {"config": config, "checkpoint_sha256": checkpoint_sha256,
             "sample": {k: params["sample"][k] for k in dag.SAMPLE_KNOBS},
             "num_classes": params["data"]["num_classes"], "sampler": revisions.SAMPLER}
    return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:16]


def load_shard(path: Path, expected: int, key: str | None = None) -> dict:
    """A finished shard, checked: readable, `expected` images, and (when given) made with
    `key`. Every failure names the file."""
    fix = "delete it to regenerate"
    # "corrupt": the sampling job prints this line when it redoes the shard
    with open_npz(path, "sample shard", fix, required=["arr_0", "labels"], lead="corrupt") as f:
        shard = {k: f[k] for k in f.files}
    check_images(shard["arr_0"], path, "sample shard", fix)
    if shard["arr_0"].shape[0] != expected:
        raise ValueError(f"{path}: holds {shard['arr_0'].shape[0]} images, expected {expected}; {fix}")
    if key is not None and str(shard.get("key", "")) != key:
        raise ValueError(f"{path}: made with another checkpoint, configuration, sampling knobs or sampler revision "
                         f"(key {str(shard.get('key', ''))!r}, expected {key!r}); delete it to regenerate")
    return shard


@dataclasses.dataclass(frozen=True)
class Sampler:
    """What a shard is generated with: `generate` (the sampling contract of
    variant.sampling, called with decode=False) and `decode` (final f_hat -> images in
    [0, 1]), the decode that generate(decode=True) would run."""
    generate: Callable[..., Samples]
    decode: Callable[[torch.Tensor], torch.Tensor]


def make_sampler(var, vae, device) -> Sampler:
    """The lean sampler on a GPU (its default precision, as close to float32 as the
    reference's fp16 autocast: `variant bench precision`); the reference one on a CPU,
    where float32 keeps the tiny profile exact. Both take the same arguments. On a GPU
    the sampler computes with its own copy, so the stage's float32 model is dropped (moved
    to the meta device: no copy back to the host), leaving the GPU's memory to the cache."""
    if torch.device(device).type == "cuda":
        sampler = LeanSampler(var, vae)
        var.to("meta")
        return Sampler(sampler.generate, sampler.decode)
    return Sampler(lambda *a, **k: generate(var, vae, *a, **k), lambda f_hat: decode_images(vae, f_hat))


def _decode_behind(decode, f_hat: torch.Tensor, stream: torch.cuda.Stream):
    """Queue the decode of f_hat on `stream`, after the work that made it, and the copy of
    its pixels to pinned host memory: (event, host tensor), ready once the event is."""
    stream.wait_stream(torch.cuda.current_stream(f_hat.device))
    with torch.cuda.stream(stream):
        f_hat.record_stream(stream)   # the allocator must not hand f_hat out before the decode ran
        pixels = uint8_pixels(decode(f_hat))
        host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(pixels, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream)
    return done, host


@torch.no_grad()
def sample_shard(sampler: Sampler, subnet, labels: np.ndarray, seed: int, cfg: dict, device,
                 overlap: bool = True) -> np.ndarray:
    """The images (N, H, W, 3) uint8 of one shard, `sample.batch_size` at a time. On a GPU
    (overlap) each batch decodes on a side stream while the next one samples: the same
    kernels on the same inputs, so the same pixels as decoding in line."""
    gen = torch.Generator(device=device).manual_seed(seed)
    side = torch.cuda.Stream(device) if overlap and torch.device(device).type == "cuda" else None
    out = []
    for i in range(0, len(labels), cfg["batch_size"]):
        lab = torch.as_tensor(labels[i:i + cfg["batch_size"]], device=device)
        f_hat = sampler.generate(lab, subnet, cfg=cfg["cfg"], top_k=cfg["top_k"], top_p=cfg["top_p"],
                                 generator=gen, decode=False).f_hat
        out.append(_decode_behind(sampler.decode, f_hat, side) if side else to_uint8(sampler.decode(f_hat)))
    if side:
        for done, _ in out:
            done.synchronize()
        out = [host.numpy() for _, host in out]
    return np.concatenate(out)


def shard_path(out, shard: int) -> Path:
    """samples/{run}/{config}.npz -> samples/{run}/{config}/shard-00003.npz"""
    return Path(out).with_suffix("") / f"shard-{shard:05d}.npz"


def run_sample(params: dict, var_path, vae_path, config: str, out: str | os.PathLike,
               shards: list[int] | None = None, device: str | None = None) -> Path:
    """Generate the listed shards of one configuration (a SLURM job each), or, with
    shards=None, every missing shard and then pack them all into `out`."""
    device = resolve_device(device, params)
    cfg = params["sample"]
    out = Path(out)
    subnet_name = names.parse_config(config)   # a misspelt name stops before the model loads
    var, vae = load_models(var_path, vae_path, device)
    check_profile(var, vae, params, var_path, vae_path)
    sampler = make_sampler(var, vae, device)
    subnet = subnet_name.subnet(var.depth, var.num_scales)
    labels, size, n_shards = class_labels(params["data"]["num_classes"], cfg["per_class"]), *dag.shard_layout(params)
    bad = [s for s in shards or [] if not 0 <= s < n_shards]
    if bad:
        raise ValueError(f"shard {bad[0]} does not exist: the profile has {n_shards} shard(s) of {size} "
                         "(params sample.per_class x data.num_classes / sample.shard_size)")
    checkpoint_sha256 = sha256_cached(var_path)
    key = shard_key(params, config, checkpoint_sha256)
    t0 = time.time()
    for s in tqdm(range(n_shards) if shards is None else shards, desc=f"sample {config}", unit="shard",
                  disable=None):
        path = shard_path(out, s)
        lab = labels[s * size:(s + 1) * size]
        if path.exists():
            try:
                load_shard(path, len(lab), key)   # finished earlier: check it, don't redo it
                continue
            except ValueError as e:
                print(f"regenerating: {e}")
        images = sample_shard(sampler, subnet, lab, shard_seed(cfg["seed"], s), cfg, device)
        save_npz(path, arr_0=images, labels=lab, key=np.array(key))
    if shards is not None:
        print(f"shard(s) {shards} of {config} in {time.time() - t0:.1f}s")
        return out
    pack(params, var_path, config, out, checkpoint_sha256)
    print(f"{out}: {len(labels)} images of {config} in {time.time() - t0:.1f}s")
    return out


def pack(params: dict, var_path, config: str, out, checkpoint_sha256: str | None = None) -> Path:
    """Check every shard (count, key) and write the ADM-format .npz in pack_order; cheap, no
    model. No `mu`/`sigma` keys: ADM's evaluator would take those as the file's statistics.
    checkpoint_sha256: var_path's, when the caller has hashed it already."""
    out = Path(out)
    labels, size, n_shards = class_labels(params["data"]["num_classes"], params["sample"]["per_class"]), \
        *dag.shard_layout(params)
    checkpoint_sha256 = checkpoint_sha256 or sha256_cached(var_path)
    key = shard_key(params, config, checkpoint_sha256)
    missing = [str(shard_path(out, s)) for s in range(n_shards) if not shard_path(out, s).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {n_shards} shard(s) missing, e.g. {missing[0]}: "
                                f"run `variant sample --shards` for them")
    seed = order_seed(params["sample"]["seed"])
    index = pack_order(labels, seed)   # a function of the profile only: equal for every configuration
    where = np.argsort(index)          # each generated image's position in the packed file
    images = None
    for s in range(n_shards):          # one shard in memory at a time, beside the packed array
        path, lab = shard_path(out, s), labels[s * size:(s + 1) * size]
        shard = load_shard(path, len(lab), key)
        if not np.array_equal(shard["labels"], lab):   # pack_order assumes the class-major labels
            raise ValueError(f"{path}: labels are not the profile's class-major ones; delete it to regenerate")
        if images is None:
            images = np.empty((len(labels), *shard["arr_0"].shape[1:]), np.uint8)
        if shard["arr_0"].shape[1:] != images.shape[1:]:
            raise ValueError(f"{path}: images are {shard['arr_0'].shape[1:]}, shard 0's {images.shape[1:]}; "
                             "delete it to regenerate")
        images[where[s * size:(s + 1) * size]] = shard["arr_0"]
    save_npz(out, arr_0=images, labels=labels[index], sample_index=index, order_seed=np.array(seed),
             checkpoint_sha256=np.array(checkpoint_sha256), config=np.array(config),
             seed=np.array(params["sample"]["seed"]))
    return out


def add_parser(sub):
    p = sub.add_parser("sample")
    params_options(p, reads="`sample` holds the knobs")
    p.add_argument("--var", required=True, help="VAR checkpoint (reference key layout)")
    p.add_argument("--vae", help="VQVAE checkpoint (not needed with --pack)")
    p.add_argument("--config", required=True, help="full | d<d>_N<N> | d<d>_S<k>-<k>...")
    p.add_argument("--out", required=True, help="the packed .npz")
    p.add_argument("--shards", type=int, nargs="+", help="only generate these shards (one job each); no packing")
    p.add_argument("--pack", action="store_true", help="only check the shards and pack them into --out")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the profile's `device`)")
    p.set_defaults(func=_sample_main)


def _sample_main(a) -> int:
    params = load_params(a.params, a.profile)
    require_file(a.var, "--var: the VAR checkpoint to sample")
    if a.vae:
        require_file(a.vae, "--vae: its VQVAE checkpoint")
    if a.pack:
        pack(params, a.var, a.config, a.out)
        print(f"{a.out}: packed {dag.shard_layout(params)[1]} shard(s)")
    elif not a.vae:
        raise ValueError("--vae is required to sample (only --pack does without)")
    else:
        run_sample(params, a.var, a.vae, a.config, a.out, a.shards, a.device)
    return 0
