"""The VAR transformer (next-scale prediction) as a VARiant supernet.

Parameter and buffer names follow the released `var_d*.pth`, so those files load with
strict=True and our fine-tuned checkpoints load back into the reference code.

The supernet adds one idea (paper Eq. 2 and 3): scales 1..N run all D layers, later
scales only the layers I_d. In teacher forcing this means a skipped layer updates the
bridge tokens and leaves the flexible-zone tokens as they are; because attention is
block-causal, the flexible tokens at a subnet layer still see the bridge tokens' states
at that same layer, exactly what the KV-cached sampler sees.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from variant.models.supernet import Subnet


def block_causal_attention(q, k, v, scales, scale):
    """Attention in which each scale's tokens see their own and every earlier scale.

    q, k, v: (B, H, L, c), tokens ordered by scale; scales: token count of each scale.
    One unmasked call per scale (queries of the scale, keys up to its end) lets SDPA pick
    its fused flash kernels; one call with an L x L additive mask cannot.
    """
    out, end = [], 0
    for n in scales:
        out.append(F.scaled_dot_product_attention(q[:, :, end:end + n], k[:, :, :end + n],
                                                  v[:, :, :end + n], scale=scale))
        end += n
    return torch.cat(out, dim=2)


class SelfAttention(nn.Module):
    """Multi-head attention with L2-normalised queries and keys (attn_l2_norm).

    `kv_cache`, when given, is an object with `append(k, v) -> (k_all, v_all)`: the
    sampler decides how keys and values are stored (see variant.sampling.cache).
    """

    def __init__(self, width: int, num_heads: int, attn_l2_norm: bool = True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.attn_l2_norm = attn_l2_norm
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        if attn_l2_norm:  # learnable per-head temperature, capped at 100
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.scale = 1.0
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.proj = nn.Linear(width, width)

    def qkv_bias(self):
        """The bias of mat_qkv: keys have none (the checkpoints keep a zero buffer for it)."""
        return torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))

    def qkv(self, x, bias=None):
        """Queries, keys and values (B, L, 3, H, c). bias: qkv_bias(), if the caller keeps it."""
        B, L, _ = x.shape
        bias = self.qkv_bias() if bias is None else bias
        return F.linear(x, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)

    def temperature(self, dtype=None):
        """The per-head factor on the normalised scores (1, H, 1, 1), capped at 100;
        dtype: the parameter's dtype to compute it in (default its own)."""
        scale_mul = self.scale_mul_1H11 if dtype is None else self.scale_mul_1H11.to(dtype)
        return scale_mul.clamp_max(math.log(100)).exp()

    def forward(self, x, attn_mask=None, kv_cache=None, scales=None):
        """scales: token counts per scale for block-causal attention (instead of attn_mask)."""
        B, L, C = x.shape
        q, k, v = self.qkv(x).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, c)
        if self.attn_l2_norm:
            q = F.normalize(q, dim=-1).mul(self.temperature())
            k = F.normalize(k, dim=-1)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        dtype = v.dtype  # keys come out of the fp32 normalisation; attend in one dtype
        q, k = q.to(dtype), k.to(dtype)
        if scales is not None:
            out = block_causal_attention(q, k, v, scales, self.scale)
        elif attn_mask is not None and not isinstance(attn_mask, torch.Tensor):  # a flex BlockMask
            from torch.nn.attention.flex_attention import flex_attention
            out = flex_attention(q, k, v, block_mask=attn_mask, scale=self.scale)
        else:
            mask = attn_mask if attn_mask is None or attn_mask.dtype == torch.bool else attn_mask.to(dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def drop_path(x, keep_prob: torch.Tensor):
    """Stochastic depth: keep each sample's branch with probability keep_prob (a 0-d
    tensor), scaled by 1 / keep_prob, else zero it. The mask is one tensor op on x's device
    (no Python randomness, no sync), so it also runs inside a compiled block."""
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * keep.div_(keep_prob)


class AdaLN(NamedTuple):
    """A block's AdaLN terms, each (B, 1, C): before each branch h = LN(x) * scale + shift
    (scale with the +1 included), and the branch is added to x times gamma."""
    shift1: torch.Tensor
    scale1: torch.Tensor
    gamma1: torch.Tensor
    shift2: torch.Tensor
    scale2: torch.Tensor
    gamma2: torch.Tensor


class AdaLNBlock(nn.Module):
    """Transformer block whose LayerNorms are modulated by the class condition.

    drop_path: probability of dropping each residual branch of a sample in training (the
    reference's stochastic depth), over whatever tokens of it the block is given (a subnet
    step passes only the scales that run this layer). A plain float: no state dict key.
    forward() branches on the bool `drops` and masks with the 0-d buffer `keep_prob`, never
    the float: torch.compile guards on Python numbers, and 30 blocks of distinct rates
    would each recompile (past its limit of 8: the rest run uncompiled)."""

    def __init__(self, width, num_heads, mlp_ratio=4.0, shared_aln=False, attn_l2_norm=True,
                 norm_eps=1e-6, drop_path=0.0):
        super().__init__()
        self.width = width
        self.register_buffer("keep_prob", torch.ones(()), persistent=False)
        self.set_drop_path(drop_path)
        self.attn = SelfAttention(width, num_heads, attn_l2_norm)
        self.ffn = FFN(width, round(width * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        self.shared_aln = shared_aln
        if shared_aln:  # VAR-d36: a per-block offset on one model-level projection
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, width) / width**0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def modulation(self, cond):
        """(gamma1, gamma2, scale1, scale2, shift1, shift2), each (B, 1, C)."""
        if self.shared_aln:  # cond is already the shared projection, (B, 1, 6, C)
            return (self.ada_gss + cond).unbind(2)
        return self.ada_lin(cond).view(-1, 1, 6, self.width).unbind(2)

    def ada_terms(self, cond, dtype=None) -> AdaLN:
        """The modulation as the block applies it; dtype: cast the terms before the +1."""
        g1, g2, s1, s2, b1, b2 = self.modulation(cond)
        if dtype is not None:
            g1, g2, s1, s2, b1, b2 = (t.to(dtype) for t in (g1, g2, s1, s2, b1, b2))
        return AdaLN(b1, s1.add(1), g1, b2, s2.add(1), g2)

    def set_drop_path(self, p: float) -> None:
        self.drop_path, self.drops = float(p), p > 0
        self.keep_prob.fill_(1 - self.drop_path)

    def _apply(self, fn, *args, **kwargs):
        # after .double()/.to(dtype), 1 - p rounded once into the new dtype, as a Python
        # float would be, not a rounding of the old dtype's value
        out = super()._apply(fn, *args, **kwargs)
        self.keep_prob.fill_(1 - self.drop_path)
        return out

    def forward(self, x, cond, attn_mask=None, kv_cache=None, scales=None):
        m = self.ada_terms(cond)
        h = self.ln_wo_grad(x).mul(m.scale1).add(m.shift1)
        drop = self.drops and self.training
        a = self.attn(h, attn_mask, kv_cache, scales).mul(m.gamma1)
        x = x + (drop_path(a, self.keep_prob) if drop else a)
        h = self.ln_wo_grad(x).mul(m.scale2).add(m.shift2)
        f = self.ffn(h).mul(m.gamma2)
        return x + (drop_path(f, self.keep_prob) if drop else f)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, width, norm_eps=1e-6):
        super().__init__()
        self.width = width
        self.ln_wo_grad = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def ada_terms(self, cond):
        """(scale with the +1 included, shift), each (B, 1, C)."""
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.width).unbind(2)
        return scale.add(1), shift

    def forward(self, x, cond):
        scale, shift = self.ada_terms(cond)
        return self.ln_wo_grad(x).mul(scale).add(shift)


# Teacher forcing's attention, all the same result: "masked" (one call with the L x L
# block-causal mask, as the reference does; what training uses), "per_scale" (one unmasked
# call per scale) or "flex" (FlexAttention skipping fully masked tiles; compiled blocks on
# GPU). The other two are for `variant bench train --attention`.
TEACHER_FORCING_ATTENTION = ("masked", "per_scale", "flex")


class VAR(nn.Module):
    def __init__(self, depth=16, width=None, num_heads=None, num_classes=1000, vocab_size=4096,
                 cvae=32, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), mlp_ratio=4.0,
                 shared_aln=False, attn_l2_norm=True, cond_drop_rate=0.1, norm_eps=1e-6,
                 drop_path_rate=0.0, attention="masked"):
        super().__init__()
        if attention not in TEACHER_FORCING_ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(TEACHER_FORCING_ATTENTION)}, got {attention!r}")
        width = 64 * depth if width is None else width          # released models: C = 64 D
        num_heads = depth if num_heads is None else num_heads   # and head dim 64
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.depth, self.width, self.num_heads = depth, width, num_heads
        self.num_classes, self.vocab_size, self.cvae = num_classes, vocab_size, cvae
        self.patch_nums = tuple(patch_nums)
        self.shared_aln = shared_aln
        self.cond_drop_rate = cond_drop_rate
        self.attention = attention   # teacher forcing's (TEACHER_FORCING_ATTENTION); fixed at build
        self._block_masks = {}
        self.L = sum(p * p for p in self.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        ends = list(itertools.accumulate(p * p for p in self.patch_nums))
        self.scale_bounds = list(zip([0] + ends[:-1], ends))  # token range of each scale

        init_std = math.sqrt(1 / width / 3)
        self.word_embed = nn.Linear(cvae, width)
        self.class_emb = nn.Embedding(num_classes + 1, width)  # row num_classes: "no class"
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, width))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, width))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), width)
        for p in (self.class_emb.weight, self.pos_start, self.pos_1LC, self.lvl_embed.weight):
            nn.init.trunc_normal_(p, std=init_std)
        self.shared_ada_lin = (nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
                               if shared_aln else nn.Identity())
        self.blocks = nn.ModuleList(
            AdaLNBlock(width, num_heads, mlp_ratio, shared_aln, attn_l2_norm, norm_eps)
            for _ in range(depth))
        self.set_drop_path(drop_path_rate)
        self.head_nm = AdaLNBeforeHead(width, norm_eps)
        self.head = nn.Linear(width, vocab_size)

        level = torch.cat([torch.full((p * p,), k) for k, p in enumerate(self.patch_nums)])
        self.register_buffer("lvl_1L", level.view(1, self.L))
        # Block-causal: a token sees every token of its own and earlier scales.
        mask = torch.where(level.view(-1, 1) >= level.view(1, -1), 0.0, -torch.inf)
        self.register_buffer("attn_bias_for_masking", mask.view(1, 1, self.L, self.L))

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth as the reference trains: block i drops its branches with
        probability linspace(0, rate, depth)[i] (0 at the first block, rate at the last).
        Computed in float64 so the last block gets exactly `rate`."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop-path rate {rate} is outside [0, 1)")
        self.drop_path_rate = float(rate)
        rates = torch.linspace(0, rate, self.depth, dtype=torch.float64, device="cpu").tolist()
        for block, p in zip(self.blocks, rates):
            block.set_drop_path(p)

    # ---- pieces shared by teacher forcing and sampling --------------------------------
    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def subnet(self, subnet_depth: int | None = None, bridge: int | None = None) -> Subnet:
        """The (d, N) configuration; None means full depth / all scales in the bridge."""
        if subnet_depth is None:
            return Subnet.full(self.depth, self.num_scales)
        return Subnet(self.depth, subnet_depth, self.num_scales if bridge is None else bridge,
                      self.num_scales)

    def condition(self, label_B):
        """Class embedding, and the blocks' AdaLN input: the embedding itself, or for
        shared_aln models the one shared projection, (B, 1, 6, C)."""
        cond = self.class_emb(label_B)
        if not self.shared_aln:
            return cond, cond
        return cond, self.shared_ada_lin(cond).view(-1, 1, 6, self.width)

    def level_pos(self, k: int):
        """Level + position embedding of scale k's tokens, (1, pn^2, C)."""
        a, b = self.scale_bounds[k]
        return self.lvl_embed(self.lvl_1L[:, a:b]) + self.pos_1LC[:, a:b]

    def first_tokens(self, cond):
        return cond.unsqueeze(1).expand(-1, self.first_l, -1) + self.pos_start + self.level_pos(0)

    def logits(self, h, cond):
        """The head runs in float32, as the reference does."""
        with torch.autocast(h.device.type, enabled=False):
            return self.head(self.head_nm(h.float(), cond.float()))

    def flex_mask(self, scales, device):
        """FlexAttention's block-causal mask over the tokens of `scales`, built once."""
        key = (tuple(scales), str(device))
        if key not in self._block_masks:
            from torch.nn.attention.flex_attention import create_block_mask
            level = torch.cat([torch.full((self.patch_nums[k] ** 2,), k) for k in scales]).to(device)
            n = len(level)
            self._block_masks[key] = create_block_mask(
                lambda b, h, q, kv: level[q] >= level[kv], None, None, n, n, device=device)
        return self._block_masks[key]

    # ---- teacher forcing ----------------------------------------------------------------
    def forward(self, label_B, var_input, subnet: Subnet | None = None):
        """Logits (B, L, V) of every scale given the ground-truth inputs of scales 1..K-1.

        var_input: (B, L - first_l, Cvae) from VQVAE.quantize.teacher_forcing_input.
        subnet: which layers each scale runs; None = full depth. Labels are replaced by
        the "no class" row with probability cond_drop_rate in training mode (for CFG).
        """
        subnet = subnet or Subnet.full(self.depth, self.num_scales)
        if self.training and self.cond_drop_rate > 0:
            drop = torch.rand(label_B.shape[0], device=label_B.device) < self.cond_drop_rate
            label_B = torch.where(drop, self.num_classes, label_B)
        cond, cond_blocks = self.condition(label_B)
        x = torch.cat((cond.unsqueeze(1).expand(-1, self.first_l, -1) + self.pos_start,
                       self.word_embed(var_input.float())), dim=1)
        x = x + self.lvl_embed(self.lvl_1L) + self.pos_1LC
        # Under autocast the residual stream and the AdaLN condition run in the autocast
        # dtype, as in the reference's training (which made the released weights).
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            dtype = torch.get_autocast_dtype(dev)
            x, cond_blocks = x.to(dtype), cond_blocks.to(dtype)
        sizes = [p * p for p in self.patch_nums]
        for i, block in enumerate(self.blocks):
            active = [k for k in range(self.num_scales) if subnet.runs(i, k)]
            if not active:
                continue
            # Only the tokens of scales that run this layer pass it; the others keep their
            # state, and no token attends to them here (the sampler caches nothing for a
            # layer at a scale it skips).
            full = len(active) == self.num_scales
            idx = None if full else torch.cat([torch.arange(*self.scale_bounds[k], device=x.device)
                                               for k in active])
            h = x if full else x[:, idx]
            if self.attention == "per_scale":
                h = block(h, cond_blocks, scales=[sizes[k] for k in active])
            elif self.attention == "flex":
                h = block(h, cond_blocks, self.flex_mask(active, x.device))
            else:
                mask = self.attn_bias_for_masking if full else self.attn_bias_for_masking[..., idx[:, None], idx]
                h = block(h, cond_blocks, mask)
            x = h if full else x.index_copy(1, idx, h)
        # The head follows autocast here, as in the reference's training step.
        return self.head(self.head_nm(x.float(), cond.float()))
