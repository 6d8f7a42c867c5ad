"""Coarse-to-fine sampling with classifier-free guidance and a per-layer KV cache.

One call samples one (d, N) configuration of the supernet: scales 1..N run all D
layers, later scales only I_d (paper Alg. 2). Switching (d, N) is a different argument,
never a reload. A layer that a scale skips neither reads nor writes its cache at that
scale, so its cache keeps only what it computed in the bridge zone.

Two modes compute the same tokens:
- `reference` (`generate`): the reference's accounting. Caches grow by concatenation and
  every layer keeps the last scale; under fp16 autocast keys are float32 (they come out
  of the fp32 L2 normalisation) and values float16, as the reference holds them.
- `lean` (`LeanSampler`): one KV buffer per (D, d, N, batch), allocated before sampling,
  in the matmul dtype, sized by costmodel.tokens_per_layer(..., last_scale=False); the
  last scale's keys and values are attended to but never stored; fused attention,
  per-sample AdaLN projections, guidance applied before the (linear) head, and on CUDA
  one captured graph per configuration.

The lean sampler's arithmetic follows a `Precision` (PRECISIONS). The default on a GPU,
`fp16`, keeps the reference's fp16 matmuls and everything else in float32, so it stays
at least as close to a float32 run as the reference's own fp16 autocast does
(`variant bench precision` measures it); `bf16` is faster and further away, an opt-in.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from variant.costmodel import VARShape, tokens_per_layer
from variant.models import VAR, VQVAE
from variant.models.supernet import Subnet


class ConcatKVCache:
    """The reference's cache: keys and values grow by concatenation, one scale at a time."""

    def __init__(self):
        self.k = self.v = None

    def append(self, k, v):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k, self.v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        return self.k, self.v

    @property
    def tokens(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Logits with everything outside the top-k, then outside the top-p nucleus, set to -inf.
    The most likely token always survives."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, order = logits.sort(dim=-1)  # ascending
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
    return logits


def sample_tokens(logits: torch.Tensor, top_k=0, top_p=0.0, generator=None) -> torch.Tensor:
    """One token per position from (B, l, V) logits."""
    B, l, V = logits.shape
    probs = top_k_top_p_filter(logits.float(), top_k, top_p).softmax(-1)
    return torch.multinomial(probs.view(-1, V), 1, generator=generator).view(B, l)


def sample_tokens_sorted(logits: torch.Tensor, top_k=0, top_p=0.0, generator=None) -> torch.Tensor:
    """The distribution of sample_tokens, drawn from the top-k candidates only.

    topk returns the candidates in descending order, so the nucleus is a prefix: token i
    stays if the mass before it is below top_p (the reference's rule, read from the top).
    One uniform number per position picks a token by inverse CDF: no host sync, so the
    whole pass can be captured in a CUDA graph, and the work is (rows, k), not (rows, V).
    """
    V = logits.shape[-1]
    k = top_k if 0 < top_k < V else V
    values, index = logits.topk(k, dim=-1)      # in the logits' dtype: the same set, fewer bytes
    probs = values.float().softmax(-1)
    if top_p > 0:
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), device=cdf.device, generator=generator) * cdf[..., -1:]
    pick = torch.searchsorted(cdf, u, right=True).clamp_max_(k - 1)
    return index.gather(-1, pick).squeeze(-1)


@dataclass
class Samples:
    tokens: list[torch.Tensor]                 # per scale, (B, pn*pn)
    f_hat: torch.Tensor                        # (B, Cvae, pn_K, pn_K)
    images: torch.Tensor | None                # (B, 3, H, W) in [0, 1], None if not decoded
    kv_tokens_per_layer: list[int]
    kv_bytes: int
    cfg_logits: list[torch.Tensor] = field(default_factory=list)   # guided, per scale
    raw_logits: list[torch.Tensor] = field(default_factory=list)   # (2B, l, V): cond, uncond


def check_pair(var: VAR, vae: VQVAE):
    """The transformer must speak the tokenizer's language."""
    problems = []
    if tuple(var.patch_nums) != tuple(vae.patch_nums):
        problems.append(f"patch_nums {var.patch_nums} vs {vae.patch_nums}")
    if var.vocab_size != vae.vocab_size:
        problems.append(f"vocabulary {var.vocab_size} vs {vae.vocab_size}")
    if var.cvae != vae.Cvae:
        problems.append(f"latent channels {var.cvae} vs {vae.Cvae}")
    if problems:
        raise ValueError("VAR and VQVAE do not match: " + "; ".join(problems))


def _check_run(var: VAR, subnet: Subnet, prefix, stop):
    if subnet.depth != var.depth or subnet.num_scales != var.num_scales:
        raise ValueError(f"subnet {subnet} is for another model (D={var.depth}, K={var.num_scales})")
    n0 = len(prefix or ())
    if not 0 <= n0 < stop <= var.num_scales:
        raise ValueError(f"cannot sample scales {n0}..{stop - 1} of a {var.num_scales}-scale model")
    if n0 and len({subnet.layers_at(k) for k in range(n0)}) != 1:
        raise ValueError("prefill needs one layer set for all prefix scales")


def prefix_inputs(var: VAR, vae: VQVAE, cond, prefix: list[torch.Tensor], upsampled=None):
    """Teacher-forcing inputs of the prefix scales (2B, l, C) and the running f_hat.

    Used to prefill a model's KV cache with tokens another model drafted (CoDe).
    upsampled(idx, k, size): what scale k adds to f_hat (default: vae.quantize.upsampled)."""
    H = var.patch_nums[-1]
    up = upsampled or vae.quantize.upsampled
    parts, f_hat = [var.first_tokens(cond)], 0
    for k, idx in enumerate(prefix):
        f_hat = f_hat + up(idx, k, H)
        if k < len(prefix) - 1:
            nxt = var.word_embed(vae.quantize.next_input(f_hat, k + 1).to(cond.dtype)) + var.level_pos(k + 1)
            parts.append(nxt.repeat(2, 1, 1).to(parts[0].dtype))
    return torch.cat(parts, 1), f_hat


def prefix_mask(var: VAR, n_scales: int, device) -> torch.Tensor:
    """Block-causal boolean mask (True = attend) over the first n_scales scales."""
    n = var.scale_bounds[n_scales - 1][1]
    return (var.attn_bias_for_masking[0, 0, :n, :n] == 0).to(device)


@torch.no_grad()
def generate(var: VAR, vae: VQVAE, labels: torch.Tensor, subnet: Subnet | None = None,
             cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
             generator: torch.Generator | None = None, decode: bool = True,
             record_logits: bool = False, make_cache=ConcatKVCache, mode: str = "reference",
             prefix: list[torch.Tensor] | None = None, stop: int | None = None,
             forced_tokens: list[torch.Tensor] | None = None) -> Samples:
    """Sample one image per label. At scale k the logits are guided as
    (1 + t) * cond - t * uncond with t = cfg * k / (K - 1).

    mode="lean" runs LeanSampler (without CUDA graphs); keep a LeanSampler to sample
    many batches. prefix: token maps of the first scales, drafted elsewhere, that this
    model prefills into its cache (CoDe's refiner); stop: sample scales < stop only
    (CoDe's drafter). Tokens returned are the sampled scales only. forced_tokens: take
    these tokens (one map per sampled scale) instead of sampling, to compare the logits of
    two numerics on the same inputs (`variant bench precision`).
    """
    if mode == "lean":
        return LeanSampler(var, vae, cuda_graphs=False).generate(
            labels, subnet, cfg, top_k, top_p, generator, decode, record_logits, prefix, stop,
            forced_tokens)
    if mode != "reference":
        raise ValueError(f"mode must be 'reference' or 'lean', got {mode!r}")
    check_pair(var, vae)
    subnet = subnet or var.subnet()
    stop = var.num_scales if stop is None else stop
    _check_run(var, subnet, prefix, stop)
    B, K, H = labels.shape[0], var.num_scales, var.patch_nums[-1]
    cond, cond_blocks = var.condition(torch.cat((labels, torch.full_like(labels, var.num_classes))))
    caches = [make_cache() for _ in range(var.depth)]
    n0 = len(prefix or ())
    if n0:  # prefill: the prefix scales in one block-causal pass
        x, f_hat = prefix_inputs(var, vae, cond, prefix)
        mask = prefix_mask(var, n0, x.device)
        for i in subnet.layers_at(0):
            x = var.blocks[i](x, cond_blocks, mask, caches[i])
        nxt = var.word_embed(vae.quantize.next_input(f_hat, n0)) + var.level_pos(n0)
        x = nxt.to(x.dtype).repeat(2, 1, 1)
    else:
        x = var.first_tokens(cond)
        f_hat = torch.zeros(B, var.cvae, H, H, device=labels.device)
    out = Samples(tokens=[], f_hat=f_hat, images=None, kv_tokens_per_layer=[], kv_bytes=0)
    for k in range(n0, stop):
        for i in subnet.layers_at(k):
            x = var.blocks[i](x, cond_blocks, None, caches[i])
        logits = var.logits(x, cond)
        t = cfg * k / (K - 1)
        guided = (1 + t) * logits[:B] - t * logits[B:]
        idx = forced_tokens[k - n0] if forced_tokens else sample_tokens(guided, top_k, top_p, generator)
        f_hat = f_hat + vae.quantize.upsampled(idx, k, H)
        out.tokens.append(idx)
        if record_logits:
            out.cfg_logits.append(guided)
            out.raw_logits.append(logits)
        if k < stop - 1:
            nxt = var.word_embed(vae.quantize.next_input(f_hat, k + 1)) + var.level_pos(k + 1)
            x = nxt.to(x.dtype).repeat(2, 1, 1)
    out.f_hat = f_hat
    out.kv_tokens_per_layer = [c.tokens for c in caches]
    out.kv_bytes = sum(c.nbytes for c in caches)
    if decode:
        out.images = vae.fhat_to_img(f_hat).add(1).mul(0.5)
    return out


# ---- lean mode -------------------------------------------------------------------------

def lean_tokens_per_layer(var: VAR, subnet: Subnet, stop: int | None = None) -> list[int]:
    """Tokens each layer stores: every sampled scale but the last (stop - 1), which no
    later scale reads. For stop = K this is costmodel.tokens_per_layer(last_scale=False)."""
    stop = var.num_scales if stop is None else stop
    shape = VARShape(depth=var.depth, width=var.width, num_heads=var.num_heads,
                     patch_nums=tuple(var.patch_nums[:stop]))
    return tokens_per_layer(shape, subnet, last_scale=False)


class LeanKVCache:
    """All layers' keys and values in one buffer allocated up front.

    Layer i owns a contiguous (2, rows, T_i, H, c) slice, filled scale by scale: `extend`
    hands out the views the next scale's keys and values are written into, `held` what
    the layer attends to. The last scale is never stored (see LeanSampler._attention).
    """

    def __init__(self, tokens: list[int], rows: int, num_heads: int, head_dim: int, dtype, device):
        self.capacity = list(tokens)
        per_token = rows * num_heads * head_dim
        self.storage = torch.empty(2 * sum(tokens) * per_token, dtype=dtype, device=device)
        self.k, self.v, offset = [], [], 0
        for t in tokens:
            kv = self.storage[offset:offset + 2 * t * per_token].view(2, rows, t, num_heads, head_dim)
            self.k.append(kv[0])
            self.v.append(kv[1])
            offset += 2 * t * per_token
        self.pos = [0] * len(tokens)

    def reset(self):
        self.pos = [0] * len(self.capacity)

    def held(self, i: int):
        """Keys and values layer i holds, (rows, t, H, c) views."""
        return self.k[i][:, :self.pos[i]], self.v[i][:, :self.pos[i]]

    def extend(self, i: int, l: int):
        """Views for layer i's next l keys and values, to be written in place."""
        p = self.pos[i]
        if p + l > self.capacity[i]:
            raise RuntimeError(f"layer {i}: KV cache of {self.capacity[i]} tokens is full")
        self.pos[i] = p + l
        return self.k[i][:, p:p + l], self.v[i][:, p:p + l]

    @property
    def tokens(self) -> list[int]:
        return list(self.pos)

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes


# Fused elementwise kernels for lean mode on CUDA. Each does in one pass over memory what
# the torch code beside it does in several; the torch code is the definition (and what
# runs on a CPU). One program handles one token.
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

if triton is not None:
    @triton.jit
    def _split_qkv_kernel(qkv, q_out, k_out, v_out, k_scale, L, H, k_sb, k_sl, v_sb, v_sl,
                          HP: tl.constexpr, D: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        b, l = n // L, n % L
        h = tl.arange(0, HP)[:, None]
        m = h < H
        off = h * D + tl.arange(0, D)[None, :]
        src = qkv + n * 3 * H * D + off
        q = tl.load(src, mask=m, other=0.0).to(tl.float32)
        k = tl.load(src + H * D, mask=m, other=0.0).to(tl.float32)
        v = tl.load(src + 2 * H * D, mask=m, other=0.0)
        q = q / tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), 1e-12)[:, None]
        k = k / tl.maximum(tl.sqrt(tl.sum(k * k, axis=1)), 1e-12)[:, None]
        k = k * tl.load(k_scale + h, mask=m, other=0.0)
        tl.store(q_out + n * H * D + off, q.to(q_out.dtype.element_ty), mask=m)
        tl.store(k_out + b * k_sb + l * k_sl + off, k.to(k_out.dtype.element_ty), mask=m)
        tl.store(v_out + b * v_sb + l * v_sl + off, v, mask=m)

    @triton.jit
    def _add_ln_mod_kernel(x, a, gate, shift, scale, x_out, h_out, L, C, eps,
                           HAS_A: tl.constexpr, BLOCK: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        b = n // L
        cols = tl.arange(0, BLOCK)
        m = cols < C
        xv = tl.load(x + n * C + cols, mask=m, other=0.0).to(tl.float32)
        if HAS_A:
            g = tl.load(gate + b * C + cols, mask=m, other=0.0).to(tl.float32)
            xv += tl.load(a + n * C + cols, mask=m, other=0.0).to(tl.float32) * g
            xr = xv.to(x_out.dtype.element_ty)
            tl.store(x_out + n * C + cols, xr, mask=m)
            xv = xr.to(tl.float32)
        mean = tl.sum(xv, axis=0) / C
        xc = tl.where(m, xv - mean, 0.0)
        y = xc * tl.rsqrt(tl.sum(xc * xc, axis=0) / C + eps)
        sc = tl.load(scale + b * C + cols, mask=m, other=0.0).to(tl.float32)
        sh = tl.load(shift + b * C + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(h_out + n * C + cols, (y * sc + sh).to(h_out.dtype.element_ty), mask=m)

    @triton.jit
    def _merge_kernel(o1, o2, lse1, lse2, out, L, H, o1_sb, o1_sh, o1_sl, o2_sb, o2_sh, o2_sl,
                      a_sb, a_sh, a_sl, b_sb, b_sh, b_sl, HP: tl.constexpr, D: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        b, l = n // L, n % L
        h = tl.arange(0, HP)
        m = h < H
        w = tl.sigmoid(tl.load(lse1 + b * a_sb + h * a_sh + l * a_sl, mask=m, other=0.0)
                       - tl.load(lse2 + b * b_sb + h * b_sh + l * b_sl, mask=m, other=0.0))[:, None]
        d, m = tl.arange(0, D)[None, :], m[:, None]
        x1 = tl.load(o1 + b * o1_sb + h[:, None] * o1_sh + l * o1_sl + d, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(o2 + b * o2_sb + h[:, None] * o2_sh + l * o2_sl + d, mask=m, other=0.0).to(tl.float32)
        tl.store(out + n * H * D + h[:, None] * D + d, (x2 + w * (x1 - x2)).to(out.dtype.element_ty), mask=m)


def split_qkv(qkv, k_out, v_out, k_scale, use_triton: bool = False):
    """qkv (B, L, 3, H, c) -> q; k and v are written into k_out, v_out (B, L, H, c views).

    q and k are L2-normalised per head (attn_l2_norm); the per-head temperature that the
    reference puts on q is put on k instead (k_scale, (H,)): the same scores, and no
    separate pass over q."""
    B, L, _, H, c = qkv.shape
    if use_triton and qkv.is_contiguous() and k_out.stride(2) == v_out.stride(2) == c:
        q = qkv.new_empty(B, L, H, c)
        _split_qkv_kernel[(B * L,)](qkv, q, k_out, v_out, k_scale, L, H, k_out.stride(0),
                                    k_out.stride(1), v_out.stride(0), v_out.stride(1),
                                    HP=triton.next_power_of_2(H), D=c, num_warps=4)
        return q
    qk = F.normalize(qkv[:, :, :2], dim=-1)
    k_out.copy_(qk[:, :, 1] * k_scale.view(1, 1, H, 1).to(qk.dtype))
    v_out.copy_(qkv[:, :, 2])
    return qk[:, :, 0]


def add_ln_mod(x, a, gate, shift, scale, eps: float, use_triton: bool = False, out_dtype=None):
    """(x + a * gate, LayerNorm(x + a * gate) * scale + shift); a=None skips the residual.
    gate, shift, scale: (B, 1, C), scale with the AdaLN's +1 included. The sum keeps x's
    dtype, the normalised output is `out_dtype` (default x's): the next matmul's input.
    The fused kernel updates x in place (one program reads its whole row before writing
    it), so callers must treat x as consumed."""
    B, L, C = x.shape
    out_dtype = out_dtype or x.dtype
    if use_triton and x.is_contiguous() and (a is None or a.is_contiguous()):
        h = torch.empty_like(x, dtype=out_dtype)
        _add_ln_mod_kernel[(B * L,)](x, x if a is None else a, shift if gate is None else gate,
                                     shift, scale, x, h, L, C, eps, HAS_A=a is not None,
                                     BLOCK=triton.next_power_of_2(C), num_warps=8 if C >= 1024 else 4)
        return x, h
    if a is not None:
        x = torch.addcmul(x, a, gate)
    return x, torch.addcmul(shift, F.layer_norm(x, (C,), eps=eps), scale).to(out_dtype)


_CUDNN_LSE = [True]   # cleared the first time this build's cuDNN attention refuses


def _attention_with_lse(q, k, v, scale):
    """Softmax attention (B, H, L, c) and its log-sum-exp (B, H, L).
    On CUDA in half precision cuDNN's kernel first (on an H100 0.75 ms against flash's
    0.98 ms for the last scale of VAR-d30, benchmarks/attention_last_scale.py)."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        if _CUDNN_LSE[0]:
            try:
                out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
                    q, k, v, None, True, 0.0, False, False, scale=scale)[:2]
                return out, lse.reshape(q.shape[:3])
            except RuntimeError:
                _CUDNN_LSE[0] = False
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[:2]
    elif q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
    return out, lse[..., :q.shape[2]]


def attend_split(q, k1, v1, k2, v2, scale, use_triton: bool = False):
    """Attention of q over the union of (k1, v1) and (k2, v2) without concatenating them:
    each part's softmax is weighted by its share of the total mass, sigmoid(lse1 - lse2).
    (B, H, L, c) in and out; the fused merge writes (B, L, H, c) memory, which the output
    projection then reads as it is (torch's lerp writes o1's strided layout)."""
    o1, lse1 = _attention_with_lse(q, k1, v1, scale)
    o2, lse2 = _attention_with_lse(q, k2, v2, scale)
    if use_triton and o1.stride(-1) == o2.stride(-1) == 1:
        B, H, L, c = o1.shape
        out = o1.new_empty(B, L, H, c)
        _merge_kernel[(B * L,)](o1, o2, lse1, lse2, out, L, H, *(t.stride(i) for t in (o1, o2, lse1, lse2)
                                                                for i in range(3)),
                                HP=triton.next_power_of_2(H), D=c, num_warps=4)
        return out.transpose(1, 2)
    return torch.lerp(o2, o1, torch.sigmoid(lse1 - lse2).unsqueeze(-1).to(o1.dtype))


@dataclass(frozen=True)
class Precision:
    """The dtypes of the lean sampler's arithmetic."""
    matmul: torch.dtype   # block weights, matmul inputs and outputs, attention, KV cache
    stream: torch.dtype   # residual stream, LayerNorm statistics, AdaLN terms, embeddings
    head: torch.dtype     # the head's normalisation, guidance and logits
    faithful: bool        # at least as close to float32 as the reference's fp16 autocast
    note: str


PRECISIONS = {
    "fp16": Precision(torch.float16, torch.float32, torch.float32, True,
                      "fp16 matmuls and KV cache as the reference's autocast; float32 residual "
                      "stream, normalisation, AdaLN terms and logits (head in TF32)"),
    "fp32": Precision(torch.float32, torch.float32, torch.float32, True, "float32 throughout"),
    "bf16-fp32": Precision(torch.bfloat16, torch.float32, torch.float32, False,
                           "bf16 matmuls and KV cache, float32 stream and logits (opt-in: "
                           "further from float32 than the reference)"),
    "bf16": Precision(torch.bfloat16, torch.bfloat16, torch.bfloat16, False,
                      "bf16 throughout (opt-in: further from float32 than the reference)"),
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
    return out.eval().requires_grad_(False)


@contextlib.contextmanager
def _tf32_head(enabled: bool):
    """TF32 for the float32 head: its inputs keep 10 mantissa bits, as the reference's
    fp16 head, and its logits stay float32 (the reference's are rounded to fp16)."""
    if not enabled:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


@dataclass
class _Plan:
    """What one configuration (subnet, batch, guidance, prefix/stop) keeps between calls."""
    cache: LeanKVCache
    labels: torch.Tensor
    prefix: list[torch.Tensor]
    graph: object = None          # torch.cuda.CUDAGraph once captured
    out: tuple | None = None      # the graph's static outputs (tokens, f_hat)


class LeanSampler:
    """KV-lean sampling of one VAR, any (d, N), without reloading weights.

    The sampler computes with its own copy of the weights in the dtypes of `precision`
    (a PRECISIONS name; default fp16 on CUDA, fp32 on a CPU); the caller's model is not
    changed, and may be dropped to free its memory. Each configuration gets its KV buffer
    once; on CUDA its whole sampling pass is captured once as a CUDA graph and replayed
    (fresh random numbers on each replay). At most `max_plans` configurations stay
    allocated; older ones are freed.

    kernels: "triton" fuses the elementwise work on CUDA (split_qkv, add_ln_mod), "torch"
    runs the same arithmetic as plain torch ops. last_scale: "split" attends to the cache
    and the last scale separately and merges by log-sum-exp (no copy at all), "concat"
    concatenates them for the layer being computed.
    """

    def __init__(self, var: VAR, vae: VQVAE, precision: str | None = None,
                 cuda_graphs: bool = True, max_plans: int = 1, kernels: str = "triton",
                 last_scale: str = "split"):
        check_pair(var, vae)
        device = next(var.parameters()).device
        self.precision_name = precision or default_precision(device)
        if self.precision_name not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        p = self.precision = PRECISIONS[self.precision_name]
        if not p.faithful:
            warnings.warn(f"lean sampler precision {self.precision_name}: {p.note}", stacklevel=2)
        self.dtype, self.device = p.matmul, device          # dtype: the KV cache's
        self.var, self.vae = sampling_copy(var, p), vae.eval()
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self.max_plans = max_plans
        self.kernels, self.last_scale = kernels, last_scale
        self.plans: dict[tuple, _Plan] = {}
        with torch.no_grad():  # per-block constants, computed once
            self.qkv_bias = [torch.cat((b.attn.q_bias, b.attn.zero_k_bias, b.attn.v_bias))
                             for b in self.var.blocks]
            # the attention temperature from the float32 parameter, as the reference has it
            self.k_scale = [b.attn.scale_mul_1H11.float().clamp_max(math.log(100)).exp().flatten()
                            if b.attn.attn_l2_norm else None for b in var.blocks]
            self.level_pos = [self.var.level_pos(k) for k in range(var.num_scales)]

    def release(self):
        """Free every configuration's cache and graph."""
        self.plans.clear()

    @property
    def kv_bytes(self) -> int:
        return sum(p.cache.nbytes for p in self.plans.values())

    @property
    def _triton(self) -> bool:
        return self.kernels == "triton" and triton is not None and self.device.type == "cuda"

    # ---- the network, in (rows, tokens, heads, head_dim) layout ----------------------------
    def _ffn(self, ffn, h):
        if h.is_cuda:  # bias + tanh-GELU fused into the matmul (cuBLASLt epilogue)
            u = torch._addmm_activation(ffn.fc1.bias, h.flatten(0, 1), ffn.fc1.weight.t(), use_gelu=True)
            u = u.view(*h.shape[:2], -1)
        else:
            u = F.gelu(ffn.fc1(h), approximate="tanh")
        return ffn.fc2(u)

    def _attention(self, i, h, cache, store, mask):
        """Attention of block i. Its keys and values go straight into the cache; at the
        last scale (store=False) they live only while this layer is computed."""
        attn = self.var.blocks[i].attn
        B, L, C = h.shape
        H, c = attn.num_heads, attn.head_dim
        qkv = F.linear(h, attn.mat_qkv.weight, self.qkv_bias[i]).view(B, L, 3, H, c)
        past_k, past_v = cache.held(i)
        k, v = cache.extend(i, L) if store else (qkv.new_empty(B, L, H, c), qkv.new_empty(B, L, H, c))
        if attn.attn_l2_norm:
            q = split_qkv(qkv, k, v, self.k_scale[i], self._triton)
        else:
            q = qkv[:, :, 0]
            k.copy_(qkv[:, :, 1])
            v.copy_(qkv[:, :, 2])
        T = lambda t: t.transpose(1, 2)   # (B, L, H, c) memory, (B, H, L, c) view
        if store and not past_k.shape[1] and L == 1 and mask is None:
            # one query, one key: softmax is 1, the output is v. Copied out of the cache:
            # on the strided view cuBLAS picks a kernel 40x slower (seen on an H200).
            return attn.proj(v.reshape(B, L, C).contiguous())
        if store:
            k, v = cache.held(i)
        elif past_k.shape[1] and self.last_scale == "concat":
            k, v = torch.cat((past_k, k), 1), torch.cat((past_v, v), 1)
        elif past_k.shape[1]:
            o = attend_split(T(q), T(past_k), T(past_v), T(k), T(v), attn.scale, self._triton)
            return attn.proj(T(o).reshape(B, L, C))
        o = F.scaled_dot_product_attention(T(q), T(k), T(v), attn_mask=mask, scale=attn.scale)
        return attn.proj(T(o).reshape(B, L, C))

    def _block(self, i, state, mod, cache, store, mask=None):
        """AdaLN block i: the reference's arithmetic in fewer passes.

        state = [x (2B, l, C), pending]: the FFN's residual (f, gamma2) is left pending and
        added by the next block's first LayerNorm kernel (or by `_settle` after the last
        block). The block takes both out of the list and puts its own back, so nothing
        outside holds them: the input and f are freed once that first kernel has run."""
        shift1, scale1, gamma1, shift2, scale2, gamma2 = mod
        eps = self.var.blocks[i].ln_wo_grad.eps
        x, pending = state
        state.clear()
        f, g = pending or (None, None)
        del pending
        x, h = add_ln_mod(x, f, g, shift1, scale1, eps, self._triton, self.dtype)
        del f
        a = self._attention(i, h, cache, store, mask)
        del h
        x, h = add_ln_mod(x, a, gamma1, shift2, scale2, eps, self._triton, self.dtype)
        del a
        state += [x, (self._ffn(self.var.blocks[i].ffn, h), gamma2)]

    @staticmethod
    def _settle(x, pending):
        return x if pending is None else torch.addcmul(x, *pending)

    def _layers(self, layers, state, mods, cache, store, mask=None):
        """Run `layers` on state = [x, None]; returns their output (the list is emptied)."""
        for i in layers:
            self._block(i, state, mods[i], cache, store, mask)
        x, pending = state
        state.clear()
        return self._settle(x, pending)

    def _modulations(self, cond_blocks, layers):
        """Each block's AdaLN terms (shift1, 1+scale1, gamma1, shift2, 1+scale2, gamma2): the
        class condition is the same at every scale, so once per sample, not per scale."""
        mods, stream = {}, self.precision.stream
        for i in layers:
            block = self.var.blocks[i]
            inp = cond_blocks if block.shared_aln else cond_blocks.to(self.dtype)
            g1, g2, s1, s2, b1, b2 = (t.to(stream) for t in block.modulation(inp))
            mods[i] = tuple(t.contiguous() for t in (b1, s1 + 1, g1, b2, s2 + 1, g2))
        return mods

    def _guided_logits(self, x, cond_head, B, t):
        """Guidance mixes the head's input: the head is linear, so
        head((1+t) a - t b) = (1+t) head(a) - t head(b), at half the cost."""
        scale, shift = cond_head
        x = x.to(scale.dtype)
        h = torch.addcmul(shift, F.layer_norm(x, (x.shape[-1],), eps=self.var.head_nm.ln_wo_grad.eps), scale)
        return self.var.head(h[:B] * (1 + t) - h[B:] * t)

    def _run(self, plan: _Plan, subnet: Subnet, cfg, top_k, top_p, stop, generator=None, record=None,
             forced=None):
        """One sampling pass on the plan's static inputs; returns (tokens, f_hat)."""
        with _tf32_head(self.device.type == "cuda" and self.precision.head == torch.float32
                        and self.precision.matmul != torch.float32):
            return self._pass(plan, subnet, cfg, top_k, top_p, stop, generator, record, forced)

    def _pass(self, plan, subnet, cfg, top_k, top_p, stop, generator, record, forced):
        var, vae, q, stream = self.var, self.vae, self.vae.quantize, self.precision.stream
        labels, prefix, cache = plan.labels, plan.prefix, plan.cache
        B, K, H, n0 = labels.shape[0], var.num_scales, var.patch_nums[-1], len(plan.prefix)
        cache.reset()
        cond, cond_blocks = var.condition(torch.cat((labels, torch.full_like(labels, var.num_classes))))
        ran = {i for k in range(stop) for i in subnet.layers_at(k)}
        mods = self._modulations(cond_blocks, sorted(ran))
        ada = var.head_nm.ada_lin(cond.to(self.precision.head)).view(-1, 1, 2, var.width).unbind(2)
        cond_head = (ada[0] + 1, ada[1])
        if n0:
            x, f_hat = prefix_inputs(var, vae, cond, prefix, q.upsampled_by_matmul)
            mask = prefix_mask(var, n0, x.device)
            state, x = [x, None], None
            x = self._layers(subnet.layers_at(0), state, mods, cache, True, mask)
            x = (var.word_embed(q.next_input(f_hat, n0).to(stream)) + self.level_pos[n0]).repeat(2, 1, 1)
        else:
            x = var.first_tokens(cond)
            f_hat = torch.zeros(B, var.cvae, H, H, device=labels.device)
        tokens = []
        for k in range(n0, stop):
            last = k == stop - 1
            state, x = [x, None], None
            x = self._layers(subnet.layers_at(k), state, mods, cache, not last)
            guided = self._guided_logits(x, cond_head, B, cfg * k / (K - 1))
            idx = forced[k - n0] if forced else sample_tokens_sorted(guided, top_k, top_p, generator)
            f_hat = f_hat + q.upsampled_by_matmul(idx, k, H)
            tokens.append(idx)
            if record is not None:
                record.append(guided.float())
            del guided   # (B, l, V): not kept alive through the next scale
            if not last:
                x = (var.word_embed(q.next_input(f_hat, k + 1).to(stream)) + self.level_pos[k + 1]).repeat(2, 1, 1)
        return tokens, f_hat

    def _plan(self, key, subnet, B, n0, stop) -> _Plan:
        plan = self.plans.get(key)
        if plan is None:
            while self.plans and len(self.plans) >= self.max_plans:
                self.plans.pop(next(iter(self.plans)))      # free the oldest first
            var = self.var
            cache = LeanKVCache(lean_tokens_per_layer(var, subnet, stop), 2 * B, var.num_heads,
                                var.width // var.num_heads, self.dtype, self.device)
            prefix = [torch.zeros(B, p * p, dtype=torch.long, device=self.device) for p in var.patch_nums[:n0]]
            plan = self.plans[key] = _Plan(cache, torch.zeros(B, dtype=torch.long, device=self.device), prefix)
        return plan

    def _capture(self, plan, run):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):          # warm-up: lazy initialisation stays out of the graph
            run()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            plan.out = run()
        plan.graph = graph

    @torch.no_grad()
    def generate(self, labels, subnet: Subnet | None = None, cfg: float = 1.5, top_k: int = 0,
                 top_p: float = 0.0, generator=None, decode: bool = True, record_logits: bool = False,
                 prefix: list[torch.Tensor] | None = None, stop: int | None = None,
                 forced_tokens: list[torch.Tensor] | None = None) -> Samples:
        """Same contract as `generate` (record_logits keeps the guided logits only)."""
        var = self.var
        subnet = subnet or var.subnet()
        stop = var.num_scales if stop is None else stop
        _check_run(var, subnet, prefix, stop)
        B, n0 = labels.shape[0], len(prefix or ())
        plan = self._plan((subnet, B, float(cfg), int(top_k), float(top_p), n0, stop), subnet, B, n0, stop)
        plan.labels.copy_(labels)
        for buf, tok in zip(plan.prefix, prefix or ()):
            buf.copy_(tok)
        record = [] if record_logits else None
        run = lambda: self._run(plan, subnet, cfg, top_k, top_p, stop, generator, record, forced_tokens)
        if self.cuda_graphs and generator is None and not record_logits and not forced_tokens:
            if plan.graph is None:
                self._capture(plan, run)
            plan.graph.replay()
            tokens, f_hat = [t.clone() for t in plan.out[0]], plan.out[1].clone()
        else:
            tokens, f_hat = run()
        out = Samples(tokens=tokens, f_hat=f_hat, images=None, kv_tokens_per_layer=plan.cache.tokens,
                      kv_bytes=plan.cache.nbytes, cfg_logits=record or [])
        if decode:
            out.images = self.vae.fhat_to_img(f_hat).add(1).mul(0.5)
        return out
