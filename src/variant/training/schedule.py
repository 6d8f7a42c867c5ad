"""Algorithm 1's schedule and every random draw of training.

Determinism: everything random is keyed by (seed, step) or (seed, epoch), never by a
process's RNG, so a draw is the same on every rank, for every world size and after a resume:
  - subnet or full for optimizer step `step`: (seed, step);
  - data order: epoch ep is a permutation (seed, ep) of the images; hflip (p = 0.5, Table 6)
    picks the stored flipped or plain tokens per (seed, ep, image) ("coin": an epoch is one
    pass over the images, as in the paper), or "both" makes an epoch one pass over every
    stored sample; RandAugment: epoch ep reads view ep mod V;
  - class dropout and Mixup (variant.training.step): per global batch position, (seed, step);
  - drop-path masks: the process RNG re-seeded by (seed, step, micro-batch) before each
    micro-batch (variant.training.step).

The subnet probability of a 0-based epoch ep (the paper counts from 1: n = ep + 1), with
E2 = E1 + the phase-2 length:
    phase 1, ep <  E1:       p = 0.2
    phase 2, E1 <= ep < E2:  p = 0.2 + 0.8 (n - E1) / (E2 - E1)   (Eq. 5; its last epoch reaches 1.0)
    phase 3, ep >= E2:       p = 1.0
Algorithm 1's literal loops ("0 to E1", "E2+1 to E3") would contradict Table 7's epoch
totals; the 1-based reading does not. A fixed-ratio run uses its constant p throughout.
"""
from __future__ import annotations

import torch

from variant import names
from variant.stages.tokenize import TokenDataset, seed_of

STREAM_SUBNET, STREAM_DROP, STREAM_MIX, STREAM_ORDER, STREAM_FLIP, STREAM_DROP_PATH = range(6)
PHASE1_P, PHASE3_P = 0.2, 1.0


def subnet_probability(epoch: int, E1: int, E2: int) -> float:
    """Subnet probability of 0-based epoch `epoch`; E2 = E1 + phase-2 length.
    Phase 2 is Eq. 5 in exact rational arithmetic, rounded once to the nearest double (the
    float expression 0.2 + 0.8 * 3/3 would give 1.0000000000000002)."""
    if epoch < E1:
        return PHASE1_P
    if epoch < E2:   # 0.2 + 0.8 (n - E1) / (E2 - E1) as one rational, rounded once
        return (E2 - E1 + 4 * (epoch + 1 - E1)) / (5 * (E2 - E1))
    return PHASE3_P


def run_probability(run: names.Run, epoch: int, phases) -> float:
    """The run's subnet probability in `epoch`: a fixed ratio's p, else Algorithm 1's."""
    if run.kind == "fixed":
        return run.p
    E1, E2_length, _ = phases
    return subnet_probability(epoch, E1, E1 + E2_length)


def run_bridge(run: names.Run, bridge: int) -> int:
    """The bridge N a run trains its subnet with: skip-all has none (every scale runs I_d)."""
    return 0 if run.kind == "skipall" else bridge


def training_run(name: str) -> names.Run:
    """The parsed run `name`, which must be a training (not `pretrained`, not a snapshot)."""
    run = names.parse_run(name)
    if run.kind == "pretrained" or run.epoch is not None:
        raise ValueError(f"run {name!r} is not a training: progressive_d<d>, fixed_p<p>_d<d> or skipall_d<d>")
    return run


def same_run_at_depth(run: names.Run, depth: int) -> str:
    """The name of `run` with subnet depth `depth` (to list the runs a params file allows)."""
    if run.kind == "progressive":
        return names.progressive(depth)
    if run.kind == "fixed":
        return names.fixed_ratio(run.p, depth)
    return names.skip_all(depth)


def generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(*keys))


def draw_subnet(seed: int, step: int, p: float) -> bool:
    """Subnet (True) or full (False) for optimizer step `step`: the same on every rank."""
    u = torch.rand((), generator=generator(seed, STREAM_SUBNET, step), dtype=torch.float64).item()
    return u < p


def epoch_order(ds: TokenDataset, epoch: int, seed: int, flips: str = "coin") -> torch.Tensor:
    """Sample ids of epoch `epoch`, in training order."""
    n = ds.num_images
    view = epoch % ds.views
    img = torch.arange(n)
    if ds.n_flips == 1:
        ids = ds.sample_id(img, view, 0)
    elif flips == "coin":
        flip = (torch.rand(n, generator=generator(seed, STREAM_FLIP, epoch)) < 0.5).long()
        ids = ds.sample_id(img, view, flip)
    elif flips == "both":
        ids = torch.stack([ds.sample_id(img, view, 0), ds.sample_id(img, view, 1)], 1).flatten()
    else:
        raise ValueError(f"flips must be 'coin' or 'both', got {flips!r}")
    return ids[torch.randperm(len(ids), generator=generator(seed, STREAM_ORDER, epoch))]
