"""The reference loop: the model's own blocks and head, with the reference's accounting.

Caches grow by concatenation and every layer keeps the last scale; the head runs in
float32 and guidance mixes its logits.
"""
from __future__ import annotations

import torch

from variant.models import VAR, VQVAE
from variant.models.supernet import Subnet
from variant.sampling.cache import ConcatKVCache
from variant.sampling.lean import LeanSampler
from variant.sampling.loop import (SampleRequest, Samples, check_pair, decode_images, guide,
                                   sample_scales)
from variant.sampling.tokens import sample_tokens


class ReferenceBackend:
    """The scale loop's backend for the reference: each layer is the model's AdaLNBlock."""

    def __init__(self, var: VAR, vae: VQVAE, make_cache=ConcatKVCache, record_raw: bool = False):
        self.var, self.upsampled = var, vae.quantize.upsampled
        self.caches = [make_cache() for _ in range(var.depth)]
        self.raw_logits = [] if record_raw else None
        self.cond = self.cond_blocks = None

    def condition(self, cond, cond_blocks, layers):
        self.cond, self.cond_blocks = cond, cond_blocks

    def level_pos(self, k):
        return self.var.level_pos(k)

    def layers(self, layers, state, store, mask=None):
        x = state.pop()   # every layer keeps the last scale too: `store` is the lean path's
        for i in layers:
            x = self.var.blocks[i](x, self.cond_blocks, mask, self.caches[i])
        return x

    def guided_logits(self, x, t):
        logits = self.var.logits(x, self.cond)
        if self.raw_logits is not None:
            self.raw_logits.append(logits)
        return guide(logits, t)

    @staticmethod
    def draw(logits, top_k, top_p, generator):
        return sample_tokens(logits, top_k, top_p, generator)


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
    request = SampleRequest.of(var, subnet, cfg, top_k, top_p, prefix, stop, forced_tokens)
    backend = ReferenceBackend(var, vae, make_cache, record_raw=record_logits)
    record = [] if record_logits else None
    tokens, f_hat = sample_scales(backend, vae, labels, request, generator, record)
    return Samples(tokens=tokens, f_hat=f_hat, images=decode_images(vae, f_hat) if decode else None,
                   kv_tokens_per_layer=[c.tokens for c in backend.caches],
                   kv_bytes=sum(c.nbytes for c in backend.caches),
                   cfg_logits=record or [], raw_logits=backend.raw_logits or [])
