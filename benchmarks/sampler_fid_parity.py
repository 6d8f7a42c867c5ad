"""Does the fast sampler's precision cost quality? FID of each sampler on a trained model.

On the `small` profile's pre-trained VAR (made by `variant fetch --profile small`), every
sampler draws the profile's evaluation set (sample.per_class images of every class) with
the same labels, seeds and knobs, as the sample stage draws one shard; the features come
from the profile's extractor, FID is taken against the profile's reference statistics.
Each sampler is compared with the reference sampler (fp16 autocast, as the reference demo
samples) by a paired bootstrap: the same resampled indices in both sets, the spread of
the FID differences gives the interval (difference +- 1.96 standard errors).

    python benchmarks/sampler_fid_parity.py --profile small --var artifacts/small/pretrained/var.pth \
        --vae artifacts/small/pretrained/vae.pth --stats artifacts/small/reference/stats.npz \
        --weights artifacts/small/feature_extractor.pth --out results/benchmarks/sampler_fid_parity_h200.parquet
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from variant.models.checkpoint import load_models
from variant.config import load_params
from variant.metrics import extract_features, feature_layer, fid_to, image_set, paired_fid_difference
from variant.stages.profile import reference_precision
from variant.util.atomic import write_parquet
from variant.util.hashing import sha256_file
from variant.util.provenance import device_name, git_commit
from variant.stages.reference import load as load_reference
from variant.stages.sample import Sampler, sample_shard
from variant.sampling import LeanSampler, generate, tf32
from variant.sampling.loop import decode_images

MODES = ("reference", "reference-fp32", "lean", "lean-bf16", "lean-fp8")


def sampler_for(mode: str, var, vae, device) -> Sampler:
    if mode.startswith("lean"):
        lean = LeanSampler(var, vae, precision=mode.removeprefix("lean-") if mode != "lean" else None)
        return Sampler(lean.generate, lean.decode)
    context = (lambda: tf32(False)) if mode == "reference-fp32" else (lambda: reference_precision(device))

    def run(*a, **k):
        with context():
            return generate(var, vae, *a, **k)

    def decode(f_hat):
        with context():
            return decode_images(vae, f_hat)
    return Sampler(run, decode)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="small")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--var", required=True)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--stats", required=True, help="the profile's reference statistics (variant reference-stats)")
    ap.add_argument("--weights", default=None, help="the feature extractor's weights (tiny extractor)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    P = load_params(a.params, a.profile)
    S, device = P["sample"], torch.device(P["device"])
    extractor = P["evaluate"]["extractor"]
    stats = load_reference(a.stats, extractor, weights=a.weights)
    var, vae = load_models(a.var, a.vae, device)
    var.requires_grad_(False)
    labels = np.repeat(np.arange(P["data"]["num_classes"]), S["per_class"])
    layer = feature_layer(extractor, "fid")
    features, rows = {}, []
    for mode in a.modes:
        t0 = time.time()
        sampler = sampler_for(mode, var, vae, device)
        images = sample_shard(sampler, var.subnet(), labels, S["seed"], S, device)
        seconds = time.time() - t0
        del sampler
        features[mode] = extract_features(image_set(images), [layer], extractor, a.weights, device)[layer]
        rows.append(dict(mode=mode, fid=fid_to(features[mode], stats.mu, stats.sigma), num_samples=len(images),
                         sample_seconds=round(seconds, 1)))
        print(rows[-1], flush=True)
    base = "reference" if "reference" in features else a.modes[0]
    for row in rows:
        diff, se = paired_fid_difference(features[row["mode"]], features[base], stats.mu, stats.sigma,
                                     a.resamples, S["seed"])
        row.update(versus=base, fid_difference=diff, difference_se=se,
                   difference_ci_low=diff - 1.96 * se, difference_ci_high=diff + 1.96 * se)
        print(f"{row['mode']:<15} FID {row['fid']:.3f}  minus {base}: {diff:+.3f} "
              f"[{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]", flush=True)
    df = pd.DataFrame(rows).assign(
        gpu=device_name(device), profile=P["profile"], config_hash=P["config_hash"],
        checkpoint_sha256=sha256_file(a.var), git_commit=git_commit(), seed=S["seed"], cfg=S["cfg"],
        top_k=S["top_k"], top_p=S["top_p"], extractor=extractor, resamples=a.resamples,
        torch_version=torch.__version__)
    write_parquet(df, a.out)


if __name__ == "__main__":
    main()
