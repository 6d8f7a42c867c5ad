"""One optimizer step: forward, backward, all-reduce, clip and update of a global batch.

Loss (Eq. 4): cross-entropy over all L tokens of all K scales, averaged over tokens (the
reference's uniform weights 1/L), then over the global batch. A subnet step runs
Subnet(D, d, N, K), a full step every layer everywhere; parameters no step touches
(skip-all: layers outside I_d) get no gradient and no AdamW update.

The draws, keyed as in variant.training.schedule:
  - class dropout for CFG (VAR.cond_drop_rate, as the reference): per global sample
    position from (seed, step), not by VAR.forward's torch.rand;
  - Mixup (alpha > 0): lambda ~ Beta(alpha, alpha) and a partner permutation of the global
    batch from (seed, step). Tokens are discrete, so what is continuous is mixed: the VAR
    inputs (teacher-forcing features), the class embeddings (a hook on class_emb), and the
    loss, lam CE(logits, tokens_a) + (1 - lam) CE(logits, tokens_b);
  - stochastic depth: each block draws its masks from the process RNG, re-seeded by
    (seed, step, micro-batch index) before each micro-batch, so the masks are the same after
    a resume and for every world size at one micro-batch size.
Table 6: AdamW, grad clip, precision fp32 | fp16 (autocast + GradScaler) | bf16 (autocast).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from variant.stages.tokenize import seed_of, split_scales
from variant.training.distributed import DistInfo, allreduce_mean_
from variant.training.schedule import STREAM_DROP, STREAM_DROP_PATH, STREAM_MIX, generator


def enable_activation_checkpointing(model) -> None:
    """Recompute each block in the backward pass; keys of the state dict are unchanged."""
    from torch.utils.checkpoint import checkpoint
    for block in model.blocks:
        inner = block.forward

        def forward(*args, _inner=inner, **kwargs):
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
        block.forward = forward


def compile_blocks(model) -> None:
    """torch.compile each block: fuses its LayerNorm, AdaLN and residual arithmetic, which
    otherwise runs as separate passes over memory (bench train measures the gain)."""
    for block in model.blocks:
        block.compile()


AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def micro_loss(model, quant, tokens, labels, subnet, precision, mix=None):
    """Eq. 4 on one micro-batch. tokens (b, L) long, labels (b,) with dropout applied.
    mix = (lam, tokens_b, labels_b) for Mixup."""
    with torch.no_grad():
        x = quant.teacher_forcing_input(split_scales(tokens, quant.patch_nums))
        if mix is not None:
            lam, tokens_b, labels_b = mix
            x = x.mul(lam).add_(quant.teacher_forcing_input(split_scales(tokens_b, quant.patch_nums)),
                                alpha=1 - lam)
    hook = None
    if mix is not None:
        def mix_classes(module, inp, out):
            return out * lam + F.embedding(labels_b, module.weight) * (1 - lam)
        hook = model.class_emb.register_forward_hook(mix_classes)
    try:
        dtype = AUTOCAST[precision]
        with torch.autocast(tokens.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(labels, x, subnet)
    finally:
        if hook is not None:
            hook.remove()
    logits = logits.float().flatten(0, 1)
    loss = F.cross_entropy(logits, tokens.flatten())
    if mix is not None:
        loss = loss * lam + F.cross_entropy(logits, tokens_b.flatten()) * (1 - lam)
    return loss


class StepRunner:
    """Forward, backward, all-reduce, clip and update for one global batch."""

    def __init__(self, model, quant, opt, scaler, info: DistInfo, precision: str, grad_clip: float,
                 micro: int, accum: int, seed: int, mixup_alpha: float = 0.0):
        self.model, self.quant, self.opt, self.scaler = model, quant, opt, scaler
        self.info, self.precision, self.grad_clip = info, precision, grad_clip
        self.micro, self.accum, self.seed, self.mixup_alpha = micro, accum, seed, mixup_alpha
        self.global_batch = micro * accum * info.world
        self.drop_rate = model.cond_drop_rate
        model.cond_drop_rate = 0.0   # dropped in run(), per global sample position
        self.drop_path = any(b.drop_path > 0 for b in model.blocks)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def positions(self, a: int) -> slice:
        start = (a * self.info.world + self.info.rank) * self.micro
        return slice(start, start + self.micro)

    def run(self, step: int, fetch, subnet) -> float:
        """fetch(positions) -> (tokens, labels) of those global-batch positions (CPU).
        Returns the global mean loss of the step."""
        G, dev, nc = self.global_batch, self.info.device, self.model.num_classes
        drop = torch.rand(G, generator=generator(self.seed, STREAM_DROP, step)) < self.drop_rate
        lam = partner = None
        if self.mixup_alpha > 0:
            rng = np.random.default_rng([self.seed, STREAM_MIX, step])
            lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            partner = torch.from_numpy(rng.permutation(G))
        total = torch.zeros((), device=dev)
        for a in range(self.accum):
            if self.drop_path:   # the blocks' drop masks: keyed by (seed, step, micro-batch)
                chunk = a * self.info.world + self.info.rank
                torch.manual_seed(seed_of(self.seed, STREAM_DROP_PATH, step, chunk))
            pos = torch.arange(G)[self.positions(a)]
            tokens, labels = fetch(pos)
            labels = torch.where(drop[pos], nc, labels)
            mix = None
            if lam is not None:
                tb, lb = fetch(partner[pos])
                lb = torch.where(drop[partner[pos]], nc, lb)
                mix = (lam, tb.to(dev, non_blocking=True), lb.to(dev, non_blocking=True))
            loss = micro_loss(self.model, self.quant, tokens.to(dev, non_blocking=True),
                              labels.to(dev, non_blocking=True), subnet, self.precision, mix)
            loss = loss / self.accum
            self.scaler.scale(loss).backward()
            total += loss.detach()
        allreduce_mean_([p.grad for p in self.params if p.grad is not None], self.info.world)
        self.scaler.unscale_(self.opt)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], self.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        if self.info.world > 1:
            dist.all_reduce(total)
            total /= self.info.world
        return float(total)


def make_optimizer(model, lr, betas, weight_decay, device: torch.device):
    """AdamW; on CUDA the fused kernel (one launch for all parameters)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=device.type == "cuda")
