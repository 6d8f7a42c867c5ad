"""Attention of the lean sampler's last scale: which kernel, and split or concatenated.

At the last scale the lean sampler attends to the cache (earlier scales) and to the
scale's own keys without storing them, merging the two softmaxes by log-sum-exp. This
times the candidate kernels for that, on VAR-d30 shapes at batch 64 (128 rows with CFG),
and checks each against one plain attention over the concatenated keys.

    python benchmarks/attention_last_scale.py --out results/benchmarks/attention_h100.parquet
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch
import torch.nn.functional as F


def lse_attention(kind, q, k, v, scale):
    if kind == "flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[:2]
    elif kind == "cudnn":
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, False, False,
                                                                       scale=scale)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False,
                                                                           scale=scale)[:2]
    return out, lse.reshape(*q.shape[:3], -1)[..., 0] if lse.dim() == 4 else lse[..., :q.shape[2]]


def split(kind):
    def run(q, k1, v1, k2, v2, scale):
        o1, l1 = lse_attention(kind, q, k1, v1, scale)
        o2, l2 = lse_attention(kind, q, k2, v2, scale)
        return torch.lerp(o2, o1, torch.sigmoid(l1 - l2).unsqueeze(-1).to(o1.dtype))
    return run


def concat(q, k1, v1, k2, v2, scale):
    return F.scaled_dot_product_attention(q, torch.cat((k1, k2), 2), torch.cat((v1, v2), 2), scale=scale)


def timed(fn, args, iters):
    for _ in range(3):
        fn(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=128, help="batch x 2 (CFG)")
    ap.add_argument("--heads", type=int, default=30)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    # (tokens of the scale, tokens cached before it): the last two scales of VAR-d30
    for q_len, past in ((256, 424), (169, 255)):
        shape = (a.rows, a.heads)
        mk = lambda n: torch.randn(*shape, n, 64, device="cuda", dtype=torch.bfloat16)  # noqa: E731
        q, k1, v1, k2, v2 = mk(q_len), mk(past), mk(past), mk(q_len), mk(q_len)
        q, k1, k2 = (F.normalize(t, dim=-1) * 4 for t in (q, k1, k2))
        args = (q, k1, v1, k2, v2, 1.0)
        truth = concat(*args).float()
        for name, fn in (("concat (SDPA default)", concat), ("split flash", split("flash")),
                         ("split cudnn", split("cudnn")), ("split efficient", split("efficient"))):
            try:
                err = (fn(*args).float() - truth).abs().max().item()
                ms = timed(fn, args, a.iters)
            except RuntimeError as e:   # a backend this build or GPU lacks
                print(f"q={q_len} past={past} {name}: unavailable ({str(e).splitlines()[0][:80]})")
                continue
            rows.append({"gpu": torch.cuda.get_device_name(), "q_tokens": q_len, "past_tokens": past,
                         "rows": a.rows, "heads": a.heads, "method": name, "ms": ms, "max_abs_err": err,
                         "torch_version": torch.__version__})
            print(f"q={q_len} past={past} {name}: {ms:.3f} ms, max |err| {err:.1e}")
    if a.out:
        pd.DataFrame(rows).to_parquet(a.out, index=False)


if __name__ == "__main__":
    main()
