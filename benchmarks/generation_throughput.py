"""Throughput of the sample and evaluate stages at paper scale, and the GPU-hours they project.

Measures on the GPU at hand, with random weights (speed does not depend on their values):
  - generation images/s of VAR-d30 + VQVAE (256 px) with the lean sampler, VQVAE decoding
    included, for every paper depth at N=6, seeded as the sample stage runs it (one
    generator per shard, so no CUDA graph) and unseeded (CUDA graph replay);
  - images/s of a shard as the sample stage generates it (`sample_shard`, seeded), with
    each batch's decode in line or overlapped with the next batch's sampling;
  - the VQVAE decode alone, in float32, under the reference's fp16 autocast (what the
    lean sampler's default does) and the same compiled, with the uint8 pixels' difference
    to float32;
  - torch-fidelity's Inception feature extraction (inception-v3-compat, randomly
    initialised) images/s on uint8 256 px images.
Then projects the paper profile's grid (50 configurations x 50,000 images, see
`variant.dag`) to GPU-hours. Usage:

    python benchmarks/generation_throughput.py --out results/benchmarks/generation_h100.parquet
"""
from __future__ import annotations

import argparse
import time
from unittest import mock

import numpy as np
import pandas as pd
import torch

from variant import dag
from variant.config import load_params
from variant.bench.sample import random_vae, random_var
from variant.util.atomic import write_parquet
from variant.util.provenance import git_commit
from variant.names import subnet_of
from variant.sampling import LeanSampler
from variant.sampling.loop import decode_images
from variant.stages.sample import Sampler, sample_shard, to_uint8



def paper_grid() -> dict[int, int]:
    """{subnet depth: configurations} of the paper profile's DAG (full depth -> 30). Every
    configuration is costed at its depth's N=6 rate: N = 7..9 cost a little more."""
    P = load_params(profile="paper", overrides={"data.root": "unused"})
    counts: dict[int, int] = {}
    for cfgs in dag.runs_and_configs(P).values():
        for c in cfgs:
            d = subnet_of(c, 30, 10).subnet_depth
            counts[d] = counts.get(d, 0) + 1
    return counts


def timed(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def inception_images_per_s(batch: int, repeats: int) -> float:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    # No weights file offline: skip loading (random init is fine for speed).
    with mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}), \
         mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).cuda().eval()
    x = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, device="cuda")
    with torch.no_grad():
        return batch / timed(lambda: net(x), repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shard-batches", type=int, default=4, help="batches of one timed shard")
    ap.add_argument("--depths", type=int, nargs="+", default=[30, 16, 8, 4, 2],
                    help="subnet depths of the generate+decode rows (30: the full VAR-d30); the shard rows take 30 and 16")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    var, vae = random_var(30, "cuda", 0), random_vae("cuda", 0)
    sampler = LeanSampler(var, vae)
    labels = torch.arange(a.batch, device="cuda") % var.num_classes
    gpu, rows = torch.cuda.get_device_name(), []
    for d in a.depths:
        subnet = var.subnet(None if d == 30 else d, None if d == 30 else 6)
        for seeded in (True, False):
            gen = torch.Generator("cuda").manual_seed(0) if seeded else None
            run = lambda: sampler.generate(labels, subnet, cfg=1.5, top_k=900, top_p=0.96, generator=gen)
            s = timed(run, a.repeats)
            rows.append(dict(gpu=gpu, what="generate+decode", subnet_depth=d, bridge=6 if d < 30 else 10,
                             batch=a.batch, seeded=seeded, seconds=s, images_per_s=a.batch / s))
            print(rows[-1])
    # The shard loop as the sample stage runs it (`sample_shard`, seeded): each batch's decode
    # in line, or on a side stream behind the next batch's sampling (the same pixels), and
    # that with the decode compiled (its pixels' difference to the in-line decode's).
    knobs = dict(batch_size=a.batch, cfg=1.5, top_k=900, top_p=0.96)
    shard_labels = np.arange(a.batch * a.shard_batches) % var.num_classes
    # One sampler (one KV-cache plan: d30 at batch 125 holds ~23 GiB), two decodes.
    compiled_fhat_to_img = torch.compile(vae.fhat_to_img, dynamic=False)
    compiled = lambda f_hat: decode_images(vae, f_hat, sampler.precision.decode, compiled_fhat_to_img)  # noqa: E731
    variants = {"in line": (Sampler(sampler.generate, sampler.decode), False),
                "overlapped": (Sampler(sampler.generate, sampler.decode), True),
                "overlapped, compiled": (Sampler(sampler.generate, compiled), True)}
    for d in (30, 16):
        subnet = var.subnet(None if d == 30 else d, None if d == 30 else 6)
        images = {}
        for name, (shard_sampler, overlap) in variants.items():
            def shard():
                images[name] = sample_shard(shard_sampler, subnet, shard_labels, 0, knobs, "cuda", overlap)
            s = timed(shard, a.repeats)
            diff = np.abs(images[name].astype(int) - images["in line"])
            rows.append(dict(gpu=gpu, what="shard", subnet_depth=d, bridge=6 if d < 30 else 10, batch=a.batch,
                             images=len(shard_labels), seeded=True, shard_decode=name, seconds=s,
                             images_per_s=len(shard_labels) / s, uint8_max_diff_vs_in_line=int(diff.max()),
                             uint8_frac_differ_vs_in_line=float((diff > 0).mean())))
            print(rows[-1])
        if not np.array_equal(images["in line"], images["overlapped"]):
            raise SystemExit(f"d{d}: the overlapped decode changed the pixels")
    del compiled, compiled_fhat_to_img, sampler
    torch.cuda.empty_cache()
    f_hat = torch.randn(a.batch, var.cvae, 16, 16, device="cuda")
    with torch.no_grad():   # float32 (TF32 convolutions) and the reference's fp16 autocast
        exact = to_uint8(decode_images(vae, f_hat))
        fhat_to_img = {"fp32": None, "fp16-autocast": None,
                       "fp16-autocast-compiled": torch.compile(vae.fhat_to_img, dynamic=False)}
        for name, dtype in (("fp32", None), ("fp16-autocast", torch.float16), ("fp16-autocast-compiled", torch.float16)):
            decode = lambda: decode_images(vae, f_hat, dtype, fhat_to_img[name])
            t = time.perf_counter()
            decode()   # the first call compiles
            torch.cuda.synchronize()
            first_s = time.perf_counter() - t
            s = timed(decode, a.repeats)
            diff = (to_uint8(decode()).astype(int) - exact).__abs__()
            rows.append(dict(gpu=gpu, what="vqvae decode", decode=name, batch=a.batch, seconds=s,
                             images_per_s=a.batch / s, uint8_max_diff_vs_fp32=int(diff.max()),
                             uint8_frac_differ_vs_fp32=float((diff > 0).mean()), first_call_seconds=first_s))
            print(rows[-1])
    for batch in (250,):
        ips = inception_images_per_s(batch, a.repeats)
        rows.append(dict(gpu=gpu, what="inception features", batch=batch, images_per_s=ips, seconds=batch / ips))
        print(rows[-1])
    df = pd.DataFrame(rows).assign(git_commit=git_commit(), torch_version=torch.__version__)
    # Projection: sampling as the pipeline runs it (seeded) + features of every set + the reference.
    gen = df[(df.what == "generate+decode") & df.seeded].set_index("subnet_depth")["images_per_s"]
    feat = df[df.what == "inception features"]["images_per_s"].iloc[0]
    grid = paper_grid()
    if set(grid) - set(gen.index):
        write_parquet(df, a.out)   # no projection without every depth of the grid
        return
    sample_h = sum(n * 50_000 / gen[d] for d, n in grid.items()) / 3600
    eval_h = (sum(grid.values()) + 1) * 50_000 / feat / 3600
    print(f"paper grid {grid}: projected on one {gpu}: sampling {sample_h:.1f} GPU-h, "
          f"features {eval_h:.2f} GPU-h ({sum(grid.values())} configurations x 50,000 images)")
    df["projected_sampling_gpu_h"], df["projected_features_gpu_h"] = sample_h, eval_h
    write_parquet(df, a.out)


if __name__ == "__main__":
    main()
