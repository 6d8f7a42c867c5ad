"""How far each sampler's numerics drift from a float32 run: `variant bench precision`.

A faster sampler may compute in lower precision, but it must not move the sampled
distribution further from float32 than the reference's own fp16 autocast does. The
measurement: the same weights; the tokens of one float32 sampling pass forced at every
scale in every mode, so each mode sees the same inputs; at every position the filtered
(top-k, top-p) next-token distribution of the guided logits; its total-variation distance
to the float32 run's. One row per (mode, configuration, scale).

    variant bench precision --depth 30 --batch 8 --out results/profiling/precision_h200.parquet
"""
from __future__ import annotations

import sys

import torch

from variant import bench
from variant.bench.sample import bench_device, bench_models
from variant.sampling import PRECISIONS, LeanSampler, generate, tf32, top_k_top_p_filter
from variant.stages.profile import random_labels, reference_precision, write_rows
from variant.util.provenance import device_name, git_commit

MODES = ["reference"] + [f"lean-{p}" for p in PRECISIONS]


def filtered_probs(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    return top_k_top_p_filter(logits.float(), top_k, top_p).softmax(-1)


def compare(logits: torch.Tensor, exact: torch.Tensor, top_k: int, top_p: float) -> dict:
    """Distances of one scale's guided logits (B, l, V) from the float32 run's."""
    p, q = filtered_probs(logits, top_k, top_p), filtered_probs(exact, top_k, top_p)
    tv = 0.5 * (p - q).abs().sum(-1).flatten()
    return dict(tv_vs_fp32=tv.mean().item(), tv_max=tv.max().item(),
                tv_p99=tv.quantile(0.99).item() if tv.numel() > 1 else tv.max().item(),
                max_abs_logit_diff=(logits.float() - exact.float()).abs().max().item(),
                top1_agreement=(logits.argmax(-1) == exact.argmax(-1)).float().mean().item())


def measure_precision(var, vae, subnets, batch: int, modes=MODES, cfg=1.5, top_k=900, top_p=0.96,
                      seed: int = 0, log=print) -> list[dict]:
    device = next(var.parameters()).device
    labels = random_labels(var, batch, device, seed)
    kw = dict(cfg=cfg, top_k=top_k, top_p=top_p, decode=False, record_logits=True)
    rows = []
    for subnet in subnets:
        with tf32(False):   # the baseline: true float32
            exact = generate(var, vae, labels, subnet, generator=torch.Generator(device).manual_seed(seed), **kw)
        for mode in modes:
            if mode == "reference":
                with reference_precision(device):
                    out = generate(var, vae, labels, subnet, forced_tokens=exact.tokens, **kw)
                note = "fp16 autocast with TF32 (the reference's demo)" if device.type == "cuda" else "float32"
            else:
                sampler = LeanSampler(var, vae, precision=mode.removeprefix("lean-"), cuda_graphs=False)
                out = sampler.generate(labels, subnet, forced_tokens=exact.tokens, **kw)
                note = sampler.precision.note
                del sampler
            for k, (logits, ref) in enumerate(zip(out.cfg_logits, exact.cfg_logits)):
                row = dict(gpu=device_name(device), mode=mode, precision=note,
                           config="full" if subnet.is_full else subnet.name, depth=var.depth,
                           scale=k + 1, positions=logits.shape[0] * logits.shape[1], batch=batch,
                           cfg=cfg, top_k=top_k, top_p=top_p, seed=seed, git_commit=git_commit(),
                           torch_version=torch.__version__, **compare(logits, ref, top_k, top_p))
                rows.append(row)
            worst = max(r["tv_vs_fp32"] for r in rows[-len(out.cfg_logits):])
            log(f"{mode:<16} {rows[-1]['config']:<8} largest mean TV over scales {worst:.2e}")
    return rows


def add_parser(sub):
    p = bench.subcommand(sub, "precision")
    bench.model_options(p)
    p.add_argument("--batch", type=int, default=8, help="images per configuration (x2 rows with guidance)")
    p.add_argument("--config", nargs="+", default=["full"], metavar="full|D:N",
                   help="configurations: full, or subnet depth:bridge, e.g. 16:6")
    p.add_argument("--modes", nargs="+", default=MODES, choices=MODES, help="samplers to compare with float32")
    p.add_argument("--head-gain", type=float, default=8.0,
                   help="random weights: scale the head so the logits are peaked, as a trained model's")
    bench.sampling_options(p)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda where there is one)")
    p.add_argument("--out", required=True, help="parquet file, one row per (mode, configuration, scale)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    var, vae = bench_models(args.depth, bench_device(args.device), args.seed, args.var, args.vae)
    gain = 1.0 if args.var else args.head_gain
    if not args.var:
        var.head.weight.data.mul_(gain)
    subnets = [var.subnet() if c == "full" else var.subnet(*(int(v) for v in c.split(":")))
               for c in args.config]
    rows = measure_precision(var, vae, subnets, args.batch, args.modes, args.cfg, args.top_k,
                             args.top_p, args.seed, log=lambda s: print(s, flush=True))
    for r in rows:
        r.update(head_gain=gain, weights=args.var or "random")
    write_rows(rows, args.out)
    print(f"{len(rows)} rows -> {args.out}", file=sys.stderr)
    return 0
