"""fp8 (e4m3, row-scaled) against bf16 matmuls at the lean sampler's shapes on one GPU.

For each (M, K, N): whether the Triton row quantisation equals the torch definition,
Fp8Linear's distance to its own emulation (dequantised operands in float32) and to the
float32 Linear, and both matmuls' time. Usage: python benchmarks/fp8_matmul.py (a GPU of
compute capability 8.9 or later).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from variant.sampling.fp8 import Fp8Linear, check_fp8_device
from variant.sampling.kernels import quantize_rows

# VAR-d30 at batch 64 with CFG: the first scale's qkv (128 rows), a small scale's proj, and
# the last scale's fc2 and fc1 (128 x 256 rows)
SHAPES = [(128, 1920, 5760), (250, 1920, 1920), (32768, 7680, 1920), (32768, 1920, 7680)]


def seconds(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@torch.no_grad()
def main():
    check_fp8_device(torch.device("cuda"))
    torch.manual_seed(0)
    for M, K, N in SHAPES:
        lin = torch.nn.Linear(K, N).cuda()
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        fp8 = Fp8Linear(lin)
        xq, xs = quantize_rows(x)
        xq_triton, xs_triton = quantize_rows(x, use_triton=True)
        gelu_q, _ = quantize_rows(F.gelu(x, approximate="tanh"))
        gelu_triton, _ = quantize_rows(x, gelu=True, use_triton=True)
        emulated = (xq.float() * xs) @ (fp8.weight_fp8.float() * fp8.weight_scale.t()).t() + fp8.bias.float()
        y = fp8(x).float()
        print(f"M {M} K {K} N {N}: Triton quantisation equal {(xq.float() == xq_triton.float()).float().mean():.6f}"
              f" (GELU {(gelu_q.float() == gelu_triton.float()).float().mean():.6f}), scales max diff "
              f"{(xs - xs_triton).abs().max():.1e}; fp8 vs its emulation {rel(y, emulated):.2e}, "
              f"vs float32 {rel(y, lin(x.float())):.2e}")
        w, b = lin.weight.bfloat16(), lin.bias.bfloat16()
        for name, fn in (("bf16", lambda: F.linear(x, w, b)), ("fp8", lambda: fp8(x))):
            s = seconds(fn)
            print(f"   {name}: {s * 1e3:.3f} ms, {2 * M * K * N / s / 1e12:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
