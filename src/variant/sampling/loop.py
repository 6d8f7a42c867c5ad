"""The coarse-to-fine scale loop with classifier-free guidance, written once.

One call samples one (d, N) configuration of the supernet: scales 1..N run all D
layers, later scales only I_d (paper Alg. 2). Switching (d, N) is a different argument,
never a reload. A layer that a scale skips neither reads nor writes its cache at that
scale, so its cache keeps only what it computed in the bridge zone.

The reference loop (reference.py) and the lean path (lean.py) both run `sample_scales`;
what differs between them is a `Backend`: how a layer set runs on the stream with its
cache, the guided logits, the token draw and the f_hat update op.
"""
from __future__ import annotations

import contextlib

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from variant.models import VAR, VQVAE
from variant.models.supernet import Subnet


@dataclass
class Samples:
    tokens: list[torch.Tensor]                 # per scale, (B, pn*pn)
    f_hat: torch.Tensor                        # (B, Cvae, pn_K, pn_K)
    images: torch.Tensor | None                # (B, 3, H, W) in [0, 1], None if not decoded
    kv_tokens_per_layer: list[int]
    kv_bytes: int
    cfg_logits: list[torch.Tensor] = field(default_factory=list)   # guided, per scale
    raw_logits: list[torch.Tensor] = field(default_factory=list)   # (2B, l, V): cond, uncond


@dataclass(frozen=True)
class SampleRequest:
    """What one sampling call asks for, checked against the model (`of`).

    prefix: token maps of the first scales, drafted elsewhere, that this model prefills
    into its cache (CoDe's refiner); stop: sample scales < stop only (CoDe's drafter).
    forced: take these tokens (one map per sampled scale) instead of sampling."""
    subnet: Subnet
    cfg: float = 1.5
    top_k: int = 0
    top_p: float = 0.0
    prefix: tuple = ()
    stop: int = 0
    forced: list[torch.Tensor] | None = None

    @classmethod
    def of(cls, var: VAR, subnet=None, cfg=1.5, top_k=0, top_p=0.0, prefix=None, stop=None,
           forced=None) -> SampleRequest:
        """The request with its defaults filled in (full model, every scale); ValueError
        if it cannot be sampled from `var`."""
        subnet = subnet or var.subnet()
        stop = var.num_scales if stop is None else stop
        if subnet.depth != var.depth or subnet.num_scales != var.num_scales:
            raise ValueError(f"subnet {subnet} is for another model (D={var.depth}, K={var.num_scales})")
        n0 = len(prefix or ())
        if not 0 <= n0 < stop <= var.num_scales:
            raise ValueError(f"cannot sample scales {n0}..{stop - 1} of a {var.num_scales}-scale model")
        if n0 and len({subnet.layers_at(k) for k in range(n0)}) != 1:
            raise ValueError("prefill needs one layer set for all prefix scales")
        return cls(subnet, cfg, top_k, top_p, tuple(prefix or ()), stop, forced or None)

    @property
    def layers_run(self) -> list[int]:
        """Every layer some sampled scale runs."""
        return sorted({i for k in range(self.stop) for i in self.subnet.layers_at(k)})


class Backend(Protocol):
    """What the reference loop and the lean path do differently inside the scale loop."""
    var: VAR
    upsampled: Callable      # (idx, k, size) -> what scale k adds to f_hat, (B, Cvae, size, size)

    def condition(self, cond, cond_blocks, layers: list[int]) -> None:
        """Take the class condition of this pass (cond, doubled: cond then uncond rows)."""

    def level_pos(self, k: int) -> torch.Tensor:
        """Level + position embedding of scale k, (1, pn^2, C)."""

    def layers(self, layers, state: list, store: bool, mask=None) -> torch.Tensor:
        """Run `layers` on state = [x] and return the stream. The backend empties the list,
        so the loop holds no reference that keeps x alive. store=False: this scale is the
        last, no later scale reads its keys and values."""

    def guided_logits(self, x, t: float) -> torch.Tensor:
        """Guided logits (B, l, V) with guidance weight t (see `guide`)."""

    def draw(self, logits, top_k: int, top_p: float, generator) -> torch.Tensor:
        """One token per position, (B, l)."""


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


def guidance_weight(cfg: float, k: int, num_scales: int) -> float:
    """t at scale k: guidance grows linearly from 0 at the first scale to cfg at the last."""
    return cfg * k / (num_scales - 1)


def guide(rows: torch.Tensor, t: float) -> torch.Tensor:
    """(1 + t) * cond - t * uncond over rows stacked as [cond; uncond]."""
    B = rows.shape[0] // 2
    return (1 + t) * rows[:B] - t * rows[B:]


# Images the VQVAE decodes at once: its full-resolution float32 activations grow with the
# batch, and a whole sampling batch decoded at once doubled a sample job's GPU memory
# (README: the rehearsal).
DECODE_BATCH = 32


def decode_images(vae: VQVAE, f_hat: torch.Tensor, dtype: torch.dtype | None = None,
                  fhat_to_img=None) -> torch.Tensor:
    """Images in [0, 1] (float32) from the final f_hat, DECODE_BATCH images at a time.
    dtype: decode under autocast to it (the reference decodes inside its fp16 autocast);
    None: as the caller's context has it. fhat_to_img: vae.fhat_to_img or a compiled one."""
    amp = torch.autocast(f_hat.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    fhat_to_img = fhat_to_img or vae.fhat_to_img
    with amp:
        parts = [fhat_to_img(part).float() for part in f_hat.split(DECODE_BATCH)]
    return torch.cat(parts).add(1).mul(0.5)


def _next_input(backend: Backend, q, f_hat, k: int, dtype) -> torch.Tensor:
    """Scale k's input tokens, (2B, l, C): the running f_hat at scale k's size, embedded,
    for both the conditional and the unconditional rows."""
    x = backend.var.word_embed(q.next_input(f_hat, k).to(dtype)) + backend.level_pos(k)
    return x.to(dtype).repeat(2, 1, 1)


def _prefix_inputs(backend: Backend, q, cond, prefix) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing inputs of the prefix scales (2B, l, C) and the running f_hat."""
    H = backend.var.patch_nums[-1]
    parts, f_hat = [backend.var.first_tokens(cond)], 0
    for k, idx in enumerate(prefix):
        f_hat = f_hat + backend.upsampled(idx, k, H)
        if k < len(prefix) - 1:
            parts.append(_next_input(backend, q, f_hat, k + 1, parts[0].dtype))
    return torch.cat(parts, 1), f_hat


def prefix_mask(var: VAR, n_scales: int, device) -> torch.Tensor:
    """Block-causal boolean mask (True = attend) over the first n_scales scales."""
    n = var.scale_bounds[n_scales - 1][1]
    return (var.attn_bias_for_masking[0, 0, :n, :n] == 0).to(device)


def sample_scales(backend: Backend, vae: VQVAE, labels: torch.Tensor, request: SampleRequest,
                  generator=None, record: list | None = None):
    """The scale loop: returns (tokens of the sampled scales, f_hat). record: a list that
    gets each scale's guided logits (float32). No host sync: the lean path captures it
    in a CUDA graph."""
    var, q, forced = backend.var, vae.quantize, request.forced
    B, K, H, n0, stop = labels.shape[0], var.num_scales, var.patch_nums[-1], len(request.prefix), request.stop
    cond, cond_blocks = var.condition(torch.cat((labels, torch.full_like(labels, var.num_classes))))
    backend.condition(cond, cond_blocks, request.layers_run)
    if n0:  # prefill: the prefix scales in one block-causal pass
        x, f_hat = _prefix_inputs(backend, q, cond, request.prefix)
        stream, mask = x.dtype, prefix_mask(var, n0, x.device)
        state, x = [x], None
        x = backend.layers(request.subnet.layers_at(0), state, True, mask)
        x = _next_input(backend, q, f_hat, n0, stream)
    else:
        x = var.first_tokens(cond)
        stream, f_hat = x.dtype, torch.zeros(B, var.cvae, H, H, device=labels.device)
    tokens = []
    for k in range(n0, stop):
        last = k == stop - 1
        state, x = [x], None     # the backend empties the list: x is freed as soon as it can be
        x = backend.layers(request.subnet.layers_at(k), state, not last)
        guided = backend.guided_logits(x, guidance_weight(request.cfg, k, K))
        idx = forced[k - n0] if forced else backend.draw(guided, request.top_k, request.top_p, generator)
        f_hat = f_hat + backend.upsampled(idx, k, H)
        tokens.append(idx)
        if record is not None:
            record.append(guided.float())
        del guided   # (B, l, V): not kept alive through the next scale
        if not last:
            x = _next_input(backend, q, f_hat, k + 1, stream)
    return tokens, f_hat
