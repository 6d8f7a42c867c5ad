"""The lean path's fused kernels on CUDA, each beside the torch code it replaces.

The torch code is the definition (and what runs on a CPU, or with kernels="torch"); a
kernel does in one pass over memory what the torch code does in several.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# In each kernel one program handles one token.
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
    def _quantize_rows_kernel(x, out, scale, K, fp8_max, GELU: tl.constexpr, BLOCK: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < K
        v = tl.load(x + n * K + cols, mask=m, other=0.0).to(tl.float32)
        if GELU:   # tanh-GELU: 0.5 v (1 + tanh(z)) = v sigmoid(2 z)
            v = v * tl.sigmoid(1.5957691216057308 * (v + 0.044715 * v * v * v))
            v = v.to(x.dtype.element_ty).to(tl.float32)   # rounded as torch's GELU output is
        s = tl.maximum(tl.max(tl.abs(v), axis=0), 1e-12) / fp8_max
        q = tl.minimum(tl.maximum(v / s, -fp8_max), fp8_max)
        tl.store(out + n * K + cols, q.to(out.dtype.element_ty), mask=m)
        tl.store(scale + n, s)

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
    On CUDA in half precision cuDNN's kernel first: faster than flash's at the last scale
    (benchmarks/attention_last_scale.py)."""
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


def ffn_fused(ffn, h):
    """The model's FFN (fc1, tanh-GELU, fc2); on CUDA the bias and GELU are fused into fc1's
    matmul (cuBLASLt epilogue)."""
    if not h.is_cuda:
        return ffn(h)
    u = torch._addmm_activation(ffn.fc1.bias, h.flatten(0, 1), ffn.fc1.weight.t(), use_gelu=True)
    return ffn.fc2(u.view(*h.shape[:2], -1))


FP8 = torch.float8_e4m3fn


def quantize_rows(x, gelu: bool = False, use_triton: bool = False):
    """x (M, K) -> (q, s): q in float8 e4m3, s (M, 1) float32 with x ~ q * s, each row's
    largest magnitude at e4m3's largest value. gelu: quantise tanh-GELU(x) instead."""
    fp8_max = torch.finfo(FP8).max
    if use_triton and x.is_contiguous():
        M, K = x.shape
        q, s = torch.empty(M, K, dtype=FP8, device=x.device), torch.empty(M, 1, dtype=torch.float32, device=x.device)
        _quantize_rows_kernel[(M,)](x, q, s, K, fp8_max, GELU=gelu, BLOCK=triton.next_power_of_2(K),
                                    num_warps=8 if K >= 2048 else 4)
        return q, s
    if gelu:
        x = F.gelu(x, approximate="tanh")
    x = x.float()
    s = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / fp8_max
    return (x / s).clamp(-fp8_max, fp8_max).to(FP8), s
