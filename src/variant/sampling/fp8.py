"""The opt-in `fp8` precision's matmuls: a block's four Linears in float8 e4m3.

Weights are quantised once, per output channel; each matmul's input per row (token) at
every call, both scaled so the row's largest magnitude is e4m3's largest value.
On a Hopper (or Ada) GPU torch._scaled_mm multiplies the fp8 operands with those scales
and adds the bias, output bf16. Elsewhere (a CPU: the tests) the same quantisation is
emulated: the fp8 values are scaled back and multiplied in float32, so the rounding of
the operands, the part that costs quality, is the GPU's; only the accumulation differs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from variant.sampling.kernels import FP8, quantize_rows, triton


def check_fp8_device(device: torch.device) -> None:
    """fp8 matmuls need compute capability 8.9 or later on CUDA."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"the fp8 precision needs an fp8 GPU (compute capability 8.9+: Ada, Hopper); "
                         f"{name} is {'.'.join(map(str, torch.cuda.get_device_capability(device)))}")


class Fp8Linear(nn.Module):
    """`linear` with its weight in e4m3 and one float32 scale per output channel; bias and
    output in `out_dtype`. forward(x, bias=None, gelu=False): bias overrides the module's
    (the attention's q/v bias), gelu multiplies tanh-GELU(x) instead of x (the FFN's fc2,
    GELU fused into the quantisation)."""

    def __init__(self, linear: nn.Linear, out_dtype=torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        for n in (self.in_features, self.out_features):
            if n % 16:
                raise ValueError(f"fp8 matmuls need sizes divisible by 16, got a {linear.weight.shape[1]} -> "
                                 f"{linear.weight.shape[0]} Linear")
        q, s = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", q)                   # (out, in)
        self.register_buffer("weight_scale", s.t().contiguous())  # (1, out)
        bias = None if linear.bias is None else linear.bias.detach().to(out_dtype)
        self.register_buffer("bias", bias)
        self.out_dtype = out_dtype

    def forward(self, x, bias=None, gelu: bool = False):
        bias = self.bias if bias is None else bias.to(self.out_dtype)
        x2 = x.reshape(-1, self.in_features)
        xq, xs = quantize_rows(x2, gelu, use_triton=triton is not None and x.is_cuda)
        if x.is_cuda:
            out = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale, bias=bias,
                                   out_dtype=self.out_dtype)
        else:
            w = self.weight_fp8.float() * self.weight_scale.t()
            out = torch.addmm(bias.float(), xq.float() * xs, w.t()) if bias is not None else (xq.float() * xs) @ w.t()
            out = out.to(self.out_dtype)
        return out.view(*x.shape[:-1], self.out_features)


def to_fp8(var, out_dtype=torch.bfloat16) -> None:
    """Replace each block's attention and FFN Linears of `var` (a sampling copy) in place."""
    for block in var.blocks:
        block.attn.mat_qkv = Fp8Linear(block.attn.mat_qkv, out_dtype)
        block.attn.proj = Fp8Linear(block.attn.proj, out_dtype)
        block.ffn.fc1 = Fp8Linear(block.ffn.fc1, out_dtype)
        block.ffn.fc2 = Fp8Linear(block.ffn.fc2, out_dtype)


__all__ = ["FP8", "Fp8Linear", "check_fp8_device", "to_fp8"]
