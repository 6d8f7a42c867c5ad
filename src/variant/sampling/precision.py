"""The lean sampler's precision policy: which dtype each part of the arithmetic runs in.

The default on a GPU, `fp16`, keeps the reference's fp16 matmuls and everything else in
float32, so it stays at least as close to a float32 run as the reference's own fp16
autocast does (`variant bench precision` measures it); `bf16` is faster and further
away, an opt-in; `fp8` runs the blocks' four matmuls in float8 (fp8.py), an opt-in too.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from variant.models import VAR


@dataclass(frozen=True)
class Precision:
    """The dtypes of the lean sampler's arithmetic."""
    matmul: torch.dtype   # block weights, matmul inputs and outputs, attention, KV cache
    stream: torch.dtype   # residual stream, LayerNorm statistics, AdaLN terms, embeddings
    head: torch.dtype     # the head's normalisation, guidance and logits
    faithful: bool        # at least as close to float32 as the reference's fp16 autocast
    note: str
    fp8: bool = False     # the blocks' Linears in float8 e4m3 (fp8.py), output in `matmul`
    decode: torch.dtype | None = torch.float16   # the VQVAE decode's autocast (None: float32)

    @property
    def tf32_head(self) -> bool:
        """A float32 head beside half-precision matmuls runs in TF32: its inputs keep 10
        mantissa bits, as the reference's fp16 head, and its logits stay float32."""
        return self.head == torch.float32 and self.matmul != torch.float32


PRECISIONS = {
    "fp16": Precision(torch.float16, torch.float32, torch.float32, True,
                      "fp16 matmuls and KV cache as the reference's autocast; float32 residual "
                      "stream, normalisation, AdaLN terms and logits (head in TF32); the VQVAE "
                      "decodes under fp16 autocast, as the reference's does"),
    "fp32": Precision(torch.float32, torch.float32, torch.float32, True, "float32 throughout", decode=None),
    "bf16-fp32": Precision(torch.bfloat16, torch.float32, torch.float32, False,
                           "bf16 matmuls and KV cache, float32 stream and logits (opt-in: "
                           "further from float32 than the reference)"),
    "bf16": Precision(torch.bfloat16, torch.bfloat16, torch.bfloat16, False,
                      "bf16 throughout (opt-in: further from float32 than the reference)"),
    "fp8": Precision(torch.bfloat16, torch.float32, torch.float32, False,
                     "fp8 (e4m3) block matmuls with per-token and per-channel scales, bf16 attention "
                     "and KV cache, float32 stream and logits (opt-in: its quality cost is in the README)",
                     fp8=True),
}


def default_precision(device: torch.device) -> str:
    return "fp16" if device.type == "cuda" else "fp32"


def sampling_copy(var: VAR, precision: Precision) -> VAR:
    """The model in the precision's dtypes, leaving `var` as it is: blocks in the matmul
    dtype, embeddings in the stream dtype, the head in the head dtype. Blocks are copied
    one at a time, so a large model is never held twice in float32."""
    out = copy.deepcopy(var, memo={id(var.blocks): nn.ModuleList()}).to(precision.stream)
    out.head_nm.to(precision.head)
    out.head.to(precision.head)
    out.blocks = nn.ModuleList(copy.deepcopy(b).to(precision.matmul) for b in var.blocks)
    if precision.fp8:
        from variant.sampling.fp8 import to_fp8
        to_fp8(out, precision.matmul)
    return out.eval().requires_grad_(False)


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matmuls and convolutions on or off inside the block, as they were after it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
