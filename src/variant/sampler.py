"""Coarse-to-fine sampling with classifier-free guidance and a per-layer KV cache.

One call samples one (d, N) configuration of the supernet: scales 1..N run all D
layers, later scales only I_d (paper Alg. 2). Switching (d, N) is a different argument,
never a reload. A layer that a scale skips neither reads nor writes its cache at that
scale, so its cache keeps only what it computed in the bridge zone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .models import VAR, VQVAE
from .supernet import Subnet


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


@torch.no_grad()
def generate(var: VAR, vae: VQVAE, labels: torch.Tensor, subnet: Subnet | None = None,
             cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
             generator: torch.Generator | None = None, decode: bool = True,
             record_logits: bool = False, make_cache=ConcatKVCache) -> Samples:
    """Sample one image per label. At scale k the logits are guided as
    (1 + t) * cond - t * uncond with t = cfg * k / (K - 1)."""
    check_pair(var, vae)
    subnet = subnet or var.subnet()
    if subnet.depth != var.depth or subnet.num_scales != var.num_scales:
        raise ValueError(f"subnet {subnet} is for another model (D={var.depth}, K={var.num_scales})")
    B, K, H = labels.shape[0], var.num_scales, var.patch_nums[-1]
    cond, cond_blocks = var.condition(torch.cat((labels, torch.full_like(labels, var.num_classes))))
    caches = [make_cache() for _ in range(var.depth)]
    x = var.first_tokens(cond)
    f_hat = torch.zeros(B, var.cvae, H, H, device=labels.device)
    out = Samples(tokens=[], f_hat=f_hat, images=None, kv_tokens_per_layer=[], kv_bytes=0)
    for k in range(K):
        for i in subnet.layers_at(k):
            x = var.blocks[i](x, cond_blocks, None, caches[i])
        logits = var.logits(x, cond)
        t = cfg * k / (K - 1)
        guided = (1 + t) * logits[:B] - t * logits[B:]
        idx = sample_tokens(guided, top_k, top_p, generator)
        f_hat = f_hat + vae.quantize.upsampled(idx, k, H)
        out.tokens.append(idx)
        if record_logits:
            out.cfg_logits.append(guided)
            out.raw_logits.append(logits)
        if k < K - 1:
            nxt = var.word_embed(vae.quantize.next_input(f_hat, k + 1)) + var.level_pos(k + 1)
            x = nxt.to(x.dtype).repeat(2, 1, 1)
    out.f_hat = f_hat
    out.kv_tokens_per_layer = [c.tokens for c in caches]
    out.kv_bytes = sum(c.nbytes for c in caches)
    if decode:
        out.images = vae.fhat_to_img(f_hat).add(1).mul(0.5)
    return out
