"""The reference stage: the evaluation set's features and FID statistics, computed once.

    variant reference-stats --reference artifacts/P/data/eval --weights FE.pth --out artifacts/P/reference/stats.npz

Every evaluate job compares its samples with the same reference set (ImageNet 256's
reference batch in the paper profile, the generated eval split in tiny), so its features
are extracted once, through torch-fidelity's extractor and its documented preprocessing,
and cached: `stats.npz` holds the FID/PRC-layer features (precision and recall need them,
not only the statistics), the mean and covariance FID compares with, and `meta`, a JSON
record of what they were computed from: sha256 of the reference input and of the extractor
weights, and which statistics FID uses. The same record is written beside it as
`stats.json` for people and for git.

ADM's protocol (what VAR and the paper report): the reference batch .npz holds `arr_0`
(10,000 images) and `mu`/`sigma`, the Inception statistics of the whole ImageNet training
set. FID compares with those stored statistics; the 10,000 images' own statistics would
put FID 1-6 points higher. The images' features serve precision and recall. So when the
.npz carries mu/sigma of the extractor's feature dimension they are cached for FID (as
float64), and the FID between them and the images' own statistics is recorded as a check;
otherwise (a directory of images, no mu/sigma, or another dimension, e.g. the tiny
extractor on an ADM batch) the statistics are computed from the images and the record says
why.

`load()` refuses a cache that does not match the reference, weights, extractor or format
the caller names; Snakemake recomputes it when the reference input or the weights change.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from variant import revisions
from variant.options import params_options
from variant.util.atomic import atomic_path, write_text
from variant.config import load_params
from variant.util.devices import resolve_device
from variant.util.files import no_such_file, open_npz, require_file, unreadable
from variant.util.hashing import sha256_cached, sha256_file, sha256_files
from variant.metrics import (COMPUTED, INCEPTION, STORED, ReferenceStats, check_weights, fid_statistics_to_metric,
                             inception_weights_location, weights_verdict)

FORMAT = revisions.REFERENCE_STATS
REFERENCE_INPUT = "--reference: the reference images, an .npz (arr_0) or a directory of PNGs"


def input_sha256(path) -> str:
    """sha256 of a file, or of a directory's image files (relative path and content, in
    find_images order), so a renamed or edited image changes it."""
    from variant.util.images import find_images
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.exists():
        raise no_such_file(path, REFERENCE_INPUT)
    return sha256_files(path, find_images(path))


def weights_file(extractor: str, weights) -> Path:
    """The extractor's weights file: the given one, else torch-fidelity's Inception in the hub cache."""
    if weights is None and extractor != INCEPTION:
        raise ValueError(f"extractor {extractor} needs its weights file (--weights)")
    if weights is not None:
        return require_file(weights, f"--weights: the {extractor} feature extractor's weights")
    return require_file(inception_weights_location(), f"{extractor}'s weights, torch-fidelity's download")


def batch_statistics(reference: Path, dim: int) -> tuple[dict | None, str]:
    """(mu, sigma) stored in a reference batch .npz (ADM's layout), as float64, if they are
    of the extractor's feature dimension `dim`, else None; and why, for the record."""
    if reference.suffix != ".npz":
        return None, f"{reference.name} is a directory of images, not a reference batch .npz"
    with open_npz(reference, "reference batch", "pass ADM's reference batch .npz or a directory of images",
                  required=["arr_0"]) as f:
        if not {"mu", "sigma"} <= set(f.files):
            return None, f"{reference.name} has no mu/sigma"
        mu, sigma = f["mu"], f["sigma"]
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        return None, (f"{reference.name}'s mu/sigma have shapes {mu.shape}/{sigma.shape}, "
                      f"the extractor's features are {dim}-d")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{reference}: its mu/sigma hold non-finite values")
    return {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64)}, \
        f"{reference.name} carries mu/sigma of the extractor's {dim}-d features"


def build(params: dict, reference, out, weights=None, device=None) -> dict:
    """Compute the reference statistics and write them (and the record) atomically."""
    import torch_fidelity
    extractor = params["evaluate"]["extractor"]
    reference, out = Path(reference), Path(out)
    t0 = time.time()
    if not reference.exists():
        raise no_such_file(reference, REFERENCE_INPUT)
    weights_path = weights_file(extractor, weights)
    check_weights(extractor, weights_path)   # e.g. the VAR passed as --weights: now, not later
    ref_sha = input_sha256(reference)
    stats = ReferenceStats.compute(reference, extractor, weights, resolve_device(device, params))
    stored, why = batch_statistics(reference, stats.features.shape[1])
    check = None
    if stored is not None:
        # the cross-check: the batch's statistics against those of its own images
        check = fid_statistics_to_metric(stored, {"mu": stats.mu, "sigma": stats.sigma},
                                         False)[torch_fidelity.KEY_METRIC_FID]
        stats = dataclasses.replace(stats, mu=stored["mu"], sigma=stored["sigma"], fid_statistics=STORED)
    meta = {"format": FORMAT, "extractor": extractor, "reference": str(reference), "reference_sha256": ref_sha,
            "weights_sha256": (wsha := sha256_cached(weights_path)), "weights": weights_verdict(extractor, wsha),
            "num_images": len(stats.features), "image_size": list(stats.size),
            "feature_dim": int(stats.features.shape[1]), "torch_fidelity": torch_fidelity.__version__,
            "fid_statistics": stats.fid_statistics, "fid_statistics_why": why,
            "prc_reference": f"features of the {len(stats.features)} reference images",
            "fid_vs_batch_statistics": check,
            "seconds": round(time.time() - t0, 2)}
    with atomic_path(out, suffix=".tmp.npz") as tmp:
        np.savez(tmp, features=stats.features.numpy(), mu=stats.mu, sigma=stats.sigma,
                 meta=np.array(json.dumps(meta)))
    write_text(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return meta


def load(path, extractor: str, reference=None, weights=None) -> ReferenceStats:
    """The cached statistics, after checking they were computed with `extractor`, from
    `reference` (when given) and with these weights; anything else is refused, naming both."""
    path = require_file(path, "--reference-stats: make them with `variant reference-stats`, "
                              "or `snakemake` the file")
    fix = "delete it and run `variant reference-stats`"
    with open_npz(path, "reference-statistics file", fix, required=["meta", "features", "mu", "sigma"]) as f:
        features, mu, sigma = f["features"], f["mu"], f["sigma"]
        try:
            meta = json.loads(str(f["meta"]))
        except json.JSONDecodeError as e:
            raise unreadable(path, "reference-statistics file", f"meta is not JSON: {e}", fix) from e
    if not isinstance(meta, dict):
        raise unreadable(path, "reference-statistics file", "meta is not a JSON object", fix)
    rerun = "; rerun `variant reference-stats` (Snakemake does when its inputs change)"
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: a format {meta.get('format')} cache, this version reads format {FORMAT}{rerun}")
    if meta["extractor"] != extractor:
        raise ValueError(f"{path}: computed with extractor {meta['extractor']!r}, "
                         f"params evaluate.extractor is {extractor!r}{rerun}")
    weights_path = weights_file(extractor, weights)
    wsha = sha256_cached(weights_path)
    if meta["weights_sha256"] != wsha:
        raise ValueError(f"{path}: computed with extractor weights sha256 {meta['weights_sha256'][:12]}..., "
                         f"but {weights_path} is {wsha[:12]}...{rerun}")
    if reference is not None and meta["reference_sha256"] != (rsha := input_sha256(reference)):
        raise ValueError(f"{path}: computed from reference sha256 {meta['reference_sha256'][:12]}... "
                         f"({meta['reference']}), but {reference} is {rsha[:12]}...{rerun}")
    if meta.get("fid_statistics") not in (COMPUTED, STORED):
        raise ValueError(f"{path}: records no known fid_statistics ({meta.get('fid_statistics')!r}){rerun}")
    return ReferenceStats(torch.from_numpy(features), mu, sigma, tuple(meta["image_size"]), extractor,
                          meta["fid_statistics"], weights_verdict(extractor, wsha))


def add_parser(sub):
    p = sub.add_parser("reference-stats")
    params_options(p, reads="`evaluate.extractor` names the features")
    p.add_argument("--reference", required=True, help="reference images: .npz (arr_0) or a directory of PNGs")
    p.add_argument("--weights", help="feature-extractor weights (tiny profile; default: torch-fidelity's Inception)")
    p.add_argument("--out", required=True, help="stats .npz (a .json record is written beside it)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the profile's `device`)")
    p.set_defaults(func=_main)


def _main(a) -> int:
    meta = build(load_params(a.params, a.profile), a.reference, a.out, a.weights, a.device)
    print(f"{a.out}: {meta['num_images']} reference images, {meta['feature_dim']}-d {meta['extractor']} "
          f"features, reference sha256 {meta['reference_sha256'][:12]}..., {meta['seconds']} s")
    print(f"FID statistics: {meta['fid_statistics']} ({meta['fid_statistics_why']})")
    return 0
