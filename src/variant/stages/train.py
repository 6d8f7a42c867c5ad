"""Progressive supernet training (paper Algorithm 1), resumable and exact.

    variant train --profile P --run progressive_d4 --init VAR.pth --vae VAE.pth \\
        --tokens artifacts/P/tokens/train --out artifacts/P/checkpoints/progressive_d4.pth \\
        --log artifacts/P/train/progressive_d4/log.parquet
    torchrun --nproc-per-node 8 -m variant.cli train ...     (or srun: SLURM_PROCID/NTASKS)

Runs (docs/CONTRACTS.md): `progressive_d{d}` (Algorithm 1), `fixed_p{p}_d{d}` (a constant
subnet probability, Figure 2), `skipall_d{d}` (bridge N = 0, every scale runs I_d; the
progressive schedule; Table 5). The training-free baseline is the pretrained file itself.
Total epochs are Table 7's E1 + E2' + E3 for depth d (params train.phases; E2' the phase-2
length), for every run kind, so baselines get the same budget.

The schedule, exactly (`subnet_probability`). Epochs are 0-based indices `ep`; the paper
counts epochs 1-based (Figure 7: "Phase 1 End (Epoch 5)", "Phase 2 End (Epoch 20)", where
the probability "linearly increases to 100%"). So ep is the paper's epoch n = ep + 1, and
with E2 = E1 + E2':
    phase 1, ep <  E1        (n = 1 .. E1):        p = 0.2
    phase 2, E1 <= ep < E2   (n = E1+1 .. E2):     p = 0.2 + 0.8 (n - E1) / (E2 - E1)   (Eq. 5)
    phase 3, ep >= E2        (n = E2+1 .. E):      p = 1.0
i.e. Algorithm 1's phase-2 loop "for epoch = E1+1 to E2" evaluates Eq. 5 at n = E1+1 ..
E2: its first epoch is already above 0.2 and its last reaches 1.0 (phase 3's value). For
d16 (5/15/5): ep 0-4 -> 0.2; ep 5..19 -> 0.2533, 0.3067, ..., 0.9467, 1.0; ep 20-24 -> 1.0.
(Algorithm 1's literal loops "0 to E1" and "E2+1 to E3" would give E1 + 1 phase-1 epochs
and E3 - E2 phase-3 epochs, contradicting Table 7's totals; the 1-based reading does not.)

One optimizer step draws subnet-or-full once, from a torch.Generator seeded by (seed,
step): identical on every rank, for every world size, and after a resume. A subnet step
runs Subnet(D, d, N, K) (bridge scales all D layers, flexible scales I_d), a full step all
layers everywhere. Loss (Eq. 4): cross-entropy over all L tokens of all K scales, averaged
over tokens (the reference's uniform per-token weights 1/L), then over the global batch.

Everything random is keyed by (seed, step) or (seed, epoch), never by a process's RNG:
  - data order: epoch ep is a permutation (seed, ep) of the images; hflip (p = 0.5, Table
    6) picks the stored flipped or plain tokens per (seed, ep, image) ("coin", default, so
    an epoch is one pass over the images as in the paper) -- or `--flips both` makes an
    epoch one pass over every stored sample (images and their flips, twice the steps);
    RandAugment views: epoch ep reads view ep mod V (see variant.stages.tokenize).
  - class dropout for CFG (rate VAR.cond_drop_rate = 0.1, as the reference): drawn per
    global sample position from (seed, step), not by VAR.forward's torch.rand.
  - Mixup (alpha > 0): lambda ~ Beta(alpha, alpha) and a partner permutation of the global
    batch from (seed, step). Tokens are discrete, so we mix what is continuous: the VAR
    inputs (teacher-forcing f_hat features) lam x_a + (1 - lam) x_b, the class conditions
    (class embeddings, through a hook on class_emb) likewise, and the loss is
    lam CE(logits, tokens_a) + (1 - lam) CE(logits, tokens_b).
  - stochastic depth (params train.drop_path, the rate of the last block; block i drops
    with linspace(0, rate, D)[i], as the reference): each block draws its per-sample masks
    on the device, from the process RNG, which is re-seeded by (seed, step, micro-batch
    index) before each micro-batch. So the masks are the same after a resume and for every
    world size at one micro-batch size (a different micro-batch size draws other masks).
A global batch of G = world x micro x accumulation samples is cut into world x accum
micro-batches in a fixed order; gradients are averaged by an explicit bucketed all-reduce
after accumulation (gloo on CPU, nccl on GPU), so 2 processes x 1 micro-batch equal 1
process x 2 accumulated micro-batches. Parameters no step touches (skip-all: layers outside
I_d) get no gradient and no AdamW update.

Table 6: AdamW (lr, betas, weight decay 0.05 from params), constant lr, no warm-up, grad
clip 1.0, precision fp32 | fp16 (autocast + GradScaler) | bf16 (autocast).

Checkpoints: every `checkpoint_every` steps `state-dir/state.pt` (atomic) holds model,
optimizer, scaler, step, epoch, RNG states, data position and the log so far; `--resume`
(default) continues from it, bitwise (CPU; on GPU pass --deterministic: checked on an
H100 for fp16 and bf16 with Mixup, 15 steps interrupted at 6, same sha256). The state
holds only tensors and plain values, so it loads with weights_only=True (a crafted pickle
is refused unrun). It is keyed by the run's identity (run, config hash, phases, batch,
inputs' sha256): a state of another identity, or one that cannot be read, is set aside
beside it (state.pt.stale-<config hash>, state.pt.corrupt) and training starts afresh;
once the final checkpoint and log are written the state is removed. The final
supernet is written in the reference key layout (weights only) and its sha256 printed. The
per-step log (columns in docs/CONTRACTS.md; `step` is the 0-based optimizer step, whose
seed drew the row's subnet choice) is written atomically at each checkpoint and at the end;
its checkpoint_sha256 is the final checkpoint's (empty before the end).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from variant.util.atomic import atomic_path, write_text
from variant.models.checkpoint import load_error
from variant.models.supernet import Subnet
from variant.stages.tokenize import (TokenDataset, _bench_parsers, atomic_torch_save, progress, seed_of,
                       split_scales)

STREAM_SUBNET, STREAM_DROP, STREAM_MIX, STREAM_ORDER, STREAM_FLIP, STREAM_DROP_PATH = range(6)
LOG_COLUMNS = ["run", "step", "epoch", "subnet_prob", "used_subnet", "loss", "loss_full",
               "loss_subnet", "lr", "tokens_per_s"]
PHASE1_P, PHASE3_P = 0.2, 1.0


# ---------------------------------------------------------------------------------------
# the schedule and the draws

def subnet_probability(epoch: int, E1: int, E2: int) -> float:
    """Subnet probability of 0-based epoch `epoch`; E2 = E1 + phase-2 length (module doc).
    Phase 2 is Eq. 5 in exact rational arithmetic, rounded once to the nearest double (the
    float expression 0.2 + 0.8 * 3/3 would give 1.0000000000000002)."""
    if epoch < E1:
        return PHASE1_P
    if epoch < E2:   # 0.2 + 0.8 (n - E1) / (E2 - E1) as one rational, rounded once
        return (E2 - E1 + 4 * (epoch + 1 - E1)) / (5 * (E2 - E1))
    return PHASE3_P


@dataclass(frozen=True)
class RunSpec:
    name: str
    kind: str            # progressive | fixed | skipall
    subnet_depth: int
    p: float | None = None

    def probability(self, epoch: int, phases) -> float:
        if self.kind == "fixed":
            return self.p
        E1, E2len, _ = phases
        return subnet_probability(epoch, E1, E1 + E2len)

    def bridge(self, cfg: dict) -> int:
        return 0 if self.kind == "skipall" else int(cfg["train"]["bridge"])


def parse_run(run: str) -> RunSpec:
    if m := re.fullmatch(r"progressive_d(\d+)", run):
        return RunSpec(run, "progressive", int(m.group(1)))
    if m := re.fullmatch(r"fixed_p([0-9]*\.?[0-9]+)_d(\d+)", run):
        p = float(m.group(1))
        if not 0 <= p <= 1:
            raise ValueError(f"run {run!r}: probability {p} is outside 0..1")
        return RunSpec(run, "fixed", int(m.group(2)), p)
    if m := re.fullmatch(r"skipall_d(\d+)", run):
        return RunSpec(run, "skipall", int(m.group(1)))
    raise ValueError(f"run {run!r} is not progressive_d<d>, fixed_p<p>_d<d> or skipall_d<d>")


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


# ---------------------------------------------------------------------------------------
# processes

@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) or srun (SLURM_PROCID,
    SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR defaults to localhost on one node)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", 0))
        if "MASTER_ADDR" not in env:
            if int(env.get("SLURM_NNODES", "1")) > 1:
                raise ValueError("multi-node srun: set MASTER_ADDR (and MASTER_PORT) to the first node")
            env["MASTER_ADDR"] = "127.0.0.1"
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    else:
        rank, world, local = 0, 1, 0
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        dev = torch.device("cuda", local if device == "cuda" else torch.device(device).index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world)
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if world > 1:   # one line per process, so a job's log shows that every rank started
        # one write with its newline: the ranks share the log, and print's separate write of
        # the newline (unbuffered output) let two ranks' lines run together
        sys.stdout.write(f"rank {rank}/{world} (local {local}) on {os.uname().nodename}: "
                         f"{dist.get_backend()} process group, device {dev}\n")
        sys.stdout.flush()
    return DistInfo(rank, world, local, dev, owns)


def allreduce_mean_(tensors: list[torch.Tensor], world: int, bucket_elems: int = 1 << 25):
    """Average `tensors` over the processes in place, in flat buckets."""
    if world == 1 or not tensors:
        return
    bucket, size = [], 0
    for t in tensors + [None]:
        if t is not None:
            bucket.append(t)
            size += t.numel()
        if bucket and (t is None or size >= bucket_elems):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat.div_(world)
            for b, piece in zip(bucket, flat.split([b.numel() for b in bucket])):
                b.copy_(piece.view_as(b))
            bucket, size = [], 0


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


# ---------------------------------------------------------------------------------------
# one optimizer step

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
        model.cond_drop_rate = 0.0   # dropped here, per global sample position (module doc)
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


def rng_states() -> dict:
    """The process RNGs as tensors and plain values, so that a state loads with
    weights_only=True. Training draws from keyed generators; numpy's and Python's global
    RNGs are kept too, so that anything else drawing from them resumes exactly."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
           "python": {"version": version, "state": list(mt), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = s["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


STATE_KEYS = {"ident", "model", "optimizer", "scaler", "step", "epoch", "rng", "log"}


def load_state(state_path: Path, ident: dict, info: DistInfo, say) -> dict | None:
    """This run's resume state, or None to train afresh. A state of another run (params
    edited, other phases or inputs) or one that cannot be read (truncated, empty, or holding
    pickled objects: weights_only refuses them unrun) cannot be resumed, so it is set aside
    beside the state, never deleted, with one line saying so."""
    if not state_path.is_file():
        return None
    try:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if not isinstance(st, dict) or not STATE_KEYS <= set(st) or not isinstance(st["ident"], dict):
            raise ValueError("not a training state")
    except Exception as e:   # torch raises many types for a bad file
        aside, why = state_path.with_name(state_path.name + ".corrupt"), f"unreadable ({load_error(e)})"
    else:
        if st["ident"] == ident:
            return st
        keys = list(ident) + [k for k in st["ident"] if k not in ident]
        diff = [k for k in keys if st["ident"].get(k) != ident.get(k)]
        tag = re.sub(r"[^0-9A-Za-z]", "", str(st["ident"].get("config_hash")))[:16] or "unknown"
        aside, why = state_path.with_name(f"{state_path.name}.stale-{tag}"), \
            f"saved for another run ({', '.join(diff)} differ)"
    if info.world > 1:   # every rank has read the file before rank 0 moves it
        dist.barrier()
    if info.main:
        os.replace(state_path, aside)
    if info.world > 1:
        dist.barrier()
    say(f"{state_path}: {why}; set aside as {aside.name}, training {ident['run']} afresh")
    return None


def resolve_phases(cfg: dict, spec: RunSpec, override=None, params="params") -> tuple[int, int, int]:
    """The run's epochs per phase, checked. A phase may be empty (snapshot runs stop after
    phase 1, `--epochs-override 0 0 1` trains phase 3 only), but none may be negative and
    the run must train at least one epoch: else the "trained" checkpoint is its init."""
    if override is not None:
        phases, where = tuple(int(e) for e in override), "--epochs-override"
    else:
        table = {int(k): v for k, v in cfg["train"]["phases"].items()}
        where = f"{params}: profiles.{cfg.get('profile', '?')}.train.phases"
        if spec.subnet_depth not in table:
            valid = ", ".join(re.sub(r"_d\d+$", f"_d{d}", spec.name) for d in sorted(table))
            raise ValueError(f"{where}: run {spec.name} needs phase lengths for subnet depth "
                             f"{spec.subnet_depth}, which has none (valid runs: {valid}; or pass --epochs-override)")
        phases, where = tuple(table[spec.subnet_depth]), f"{where}.{spec.subnet_depth}"
    if len(phases) != 3:
        raise ValueError(f"{where}: {list(phases)} is not three phase lengths (E1, E2, E3)")
    for i, e in enumerate(phases):
        if e < 0:
            raise ValueError(f"{where}: phase {i + 1} has {e} epochs (a phase needs 0 or more, "
                             "a run at least 1 in total)")
    if sum(phases) < 1:
        raise ValueError(f"{where}: phases {list(phases)} train no epoch, so the checkpoint would "
                         "equal its init (give a phase at least 1 epoch)")
    return phases


# ---------------------------------------------------------------------------------------
# the training run

def progress_line(run: str, step: int, total: int, loss: float, p: float, tokens_per_s: float,
                  eta_s: float) -> str:
    """One line of training progress for a log without a terminal (loss and tokens/s: the
    mean since the last line)."""
    eta = time.strftime("%H:%M:%S", time.gmtime(eta_s)) if eta_s < 86400 else f"{eta_s / 3600:.0f} h"
    return (f"{run}: step {step}/{total} ({100 * step / total:.0f}%) loss {loss:.4f} p {p:.2f} "
            f"{tokens_per_s:,.0f} tokens/s ETA {eta}")


def train(cfg: dict, run: str, init, vae, tokens, out, log, state_dir=None, phases=None,
          resume: bool = True, micro_batch: int | None = None, device: str | None = None,
          stop_after: int | None = None, activation_checkpointing: bool = False,
          flips: str = "coin", deterministic: bool = False, echo=print, stop_flag=None,
          compiled: bool | None = None, snapshot_dir=None, snapshot_epochs=(),
          params="params", log_every: int | None = None) -> dict:
    """Algorithm 1 (or a baseline) from `init`; returns {"finished", "step", "sha256"}.

    snapshot_dir, snapshot_epochs: also keep the weights after each of these epochs (1-based:
    after that many epochs) as snapshot_dir/e<epoch>.pth, in the final checkpoint's layout
    (Figures 2c and 7 sample from them). They are written atomically beside the resume state
    and published to snapshot_dir with the final checkpoint: Snakemake empties an output
    directory before it reruns an interrupted job.

    stop_after: leave after that many optimizer steps in total, with the state saved
    (an interrupted job); stop_flag: a callable polled after each step (a signal arrived).
    compiled: torch.compile the blocks; None means params train.compile, else on CUDA only.
    params: the params file cfg came from, named in errors.
    log_every: without a terminal (a SLURM log), a progress line every that many steps;
    None: about 20 lines a run; 0: none. On a terminal the progress bar says it.

    The resume state is this run's only: another run's or an unreadable one is set aside
    (load_state), and it is removed once the final checkpoint and log are written.
    """
    from variant.models.checkpoint import build_vae, build_var, read_state_dict, save_state_dict, sha256_file
    from variant.util.provenance import provenance, write_parquet

    tcfg = cfg["train"]
    spec = parse_run(run)
    phases = resolve_phases(cfg, spec, phases, params)
    if micro_batch is not None and micro_batch < 1:   # checked before `or` would take 0 for unset
        raise ValueError(f"--micro-batch: {micro_batch} is not a positive number of samples per "
                         "process (leave it out for global batch / processes)")
    info = init_distributed(device or cfg.get("device", "cpu"))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    seed, G = int(tcfg["seed"]), int(tcfg["batch_size"])
    say = echo if info.main else (lambda *a, **k: None)

    ds = TokenDataset(tokens)
    vae_sha = sha256_file(vae)
    if ds.index["vae_sha256"] != vae_sha:
        raise ValueError(f"{tokens}: tokenised with VQVAE sha256 {ds.index['vae_sha256'][:12]}..., "
                         f"but --vae {vae} is {vae_sha[:12]}...; re-run variant tokenize")
    want_ra = tcfg.get("augment", {}).get("randaugment")
    if (want_ra is None) != (ds.index["randaugment"] is None):
        raise ValueError(f"{tokens}: tokens have randaugment={ds.index['randaugment']} but params "
                         f"train.augment.randaugment={want_ra}; re-run variant tokenize to match")
    # train.drop_path: stochastic depth; a training-only setting, the weights' keys are unchanged
    model = build_var(read_state_dict(init), str(init), drop_path_rate=float(tcfg["drop_path"]))
    if tuple(ds.patch_nums) != model.patch_nums:
        raise ValueError(f"{tokens}: token scales {ds.patch_nums} differ from the VAR's {list(model.patch_nums)}")
    if ds.num_classes > model.num_classes:
        raise ValueError(f"{tokens}: {ds.num_classes} classes but the VAR has {model.num_classes}")
    quant = build_vae(read_state_dict(vae), model.patch_nums, str(vae)).quantize
    quant = quant.to(info.device).eval().requires_grad_(False)
    model = model.to(info.device).train()
    if activation_checkpointing:
        enable_activation_checkpointing(model)
    if compiled is None:   # params train.compile; unset or null: on CUDA
        compiled = tcfg.get("compile")
    if compiled if compiled is not None else info.device.type == "cuda":
        compile_blocks(model)
    subnet = Subnet(model.depth, spec.subnet_depth, spec.bridge(cfg), model.num_scales)

    micro = micro_batch or G // info.world
    if micro < 1 or G % (info.world * micro):
        raise ValueError(f"global batch {G} is not {info.world} process(es) x micro-batch {micro} x "
                         "an integer accumulation")
    accum = G // (info.world * micro)
    per_epoch = ds.num_images * (ds.n_flips if flips == "both" else 1)
    spe = per_epoch // G
    if spe < 1:
        raise ValueError(f"{tokens}: {per_epoch} samples per epoch, fewer than one global batch of {G}")
    epochs = sum(phases)
    total = epochs * spe
    bad = [e for e in snapshot_epochs if not 1 <= e <= epochs]
    if bad:
        raise ValueError(f"{run}: snapshot epoch {bad[0]} is outside 1..{epochs}")
    if snapshot_dir is not None:
        Path(snapshot_dir).mkdir(parents=True, exist_ok=True)   # the rule's output, even with none kept

    o = tcfg["optimizer"]
    opt = make_optimizer(model, o["lr"], tuple(o.get("betas", (0.9, 0.95))), o["weight_decay"], info.device)
    precision = tcfg["precision"]
    scaler = torch.amp.GradScaler(info.device.type, enabled=precision == "fp16")
    runner = StepRunner(model, quant, opt, scaler, info, precision, float(o["grad_clip"]), micro, accum,
                        seed, float(tcfg.get("augment", {}).get("mixup_alpha") or 0.0))

    log = Path(log)
    state_path = Path(state_dir or log.parent / "state") / "state.pt"
    snapshot_path = lambda e: state_path.parent / "snapshots" / f"e{e}.pth"  # noqa: E731
    ident = {"run": run, "config_hash": cfg["config_hash"], "global_batch": G, "phases": list(phases),
             "steps_per_epoch": spe, "flips": flips, "tokens_count": len(ds),
             "init_sha256": sha256_file(init), "vae_sha256": vae_sha}
    rows, step = [], 0
    st = load_state(state_path, ident, info, say) if resume else None
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"])
        set_rng_states(st["rng"])
        rows, step = st["log"], st["step"]
        say(f"resumed {run} at step {step}/{total} (epoch {st['epoch']}) from {state_path}")
        lost = [e for e in snapshot_epochs if e * spe <= step and not snapshot_path(e).is_file()]
        if snapshot_dir is not None and lost:
            raise ValueError(f"{snapshot_path(lost[0])} is missing and {state_path} is past epoch {lost[0]}; "
                             "rerun with --no-resume to keep it")
    prov = provenance(cfg, seed, info.device)

    def write_log(sha=""):
        df = pd.DataFrame(rows, columns=LOG_COLUMNS)
        for k, v in (prov | {"checkpoint_sha256": sha}).items():
            df[k] = v
        write_parquet(df, log)

    def save_state():
        if info.main:
            atomic_torch_save({"ident": ident, "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scaler": scaler.state_dict(), "step": step, "epoch": step // spe,
                               "data": {"epoch": step // spe, "batch_in_epoch": step % spe,
                                        "global_batch": G},
                               "rng": rng_states(), "log": rows}, state_path)
            write_log()
        if info.world > 1:
            dist.barrier()

    say(f"{run}: {epochs} epochs (phases {'/'.join(map(str, phases))}) x {spe} steps of {G} "
        f"= {total} steps; {info.world} process(es) x micro-batch {micro} x accumulation {accum}; "
        f"subnet d={spec.subnet_depth} N={subnet.bridge}; drop-path {model.drop_path_rate:g}; "
        f"{precision} on {info.device}")
    order_epoch, order = None, None
    L = model.L
    bar = progress(total=total, initial=step, unit="step", desc=run) if info.main else None
    if log_every is None:
        log_every = max(1, total // 20)
    lines = bool(log_every) and (bar is None or bar.disable)
    t_start, step_start = time.perf_counter(), step
    stopped = False
    try:
        while step < total:
            epoch, b = divmod(step, spe)
            if order_epoch != epoch:
                order, order_epoch = epoch_order(ds, epoch, seed, flips), epoch
            ids = order[b * G:(b + 1) * G]
            p = spec.probability(epoch, phases)
            use = draw_subnet(seed, step, p)
            t0 = time.perf_counter()
            loss = runner.run(step, lambda pos: ds.gather(ids[pos]), subnet if use else None)
            if info.device.type == "cuda":
                torch.cuda.synchronize(info.device)
            dt = time.perf_counter() - t0
            if not math.isfinite(loss) and precision != "fp16":
                raise FloatingPointError(f"{run}: loss is {loss} at step {step}")
            rows.append({"run": run, "step": step, "epoch": epoch, "subnet_prob": p, "used_subnet": use,
                         "loss": loss, "loss_full": math.nan if use else loss,
                         "loss_subnet": loss if use else math.nan, "lr": opt.param_groups[0]["lr"],
                         "tokens_per_s": G * L / dt})
            step += 1
            if snapshot_dir is not None and step % spe == 0 and step // spe in snapshot_epochs and info.main:
                say(f"snapshot after epoch {step // spe}: {snapshot_path(step // spe)} "
                    f"sha256 {save_state_dict(model, snapshot_path(step // spe))}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", p=f"{p:.2f}", refresh=False)
            if lines and (step % log_every == 0 or step == total):
                recent = rows[-log_every:]
                per_step = (time.perf_counter() - t_start) / (step - step_start)
                say(progress_line(run, step, total, sum(r["loss"] for r in recent) / len(recent), p,
                                  sum(r["tokens_per_s"] for r in recent) / len(recent), per_step * (total - step)))
            stop = (stop_after is not None and step >= stop_after) or bool(stop_flag and stop_flag())
            if step % int(tcfg["checkpoint_every"]) == 0 or (stop and step < total):
                save_state()
            if stop and step < total:
                stopped = True
                break
    finally:
        if bar is not None:
            bar.close()
    result = {"finished": not stopped, "step": step, "total": total, "sha256": None}
    if not stopped:
        if info.main:
            for e in snapshot_epochs if snapshot_dir is not None else ():
                with atomic_path(Path(snapshot_dir) / f"e{e}.pth") as tmp:
                    shutil.copyfile(snapshot_path(e), tmp)
            sha = save_state_dict(model, out)
            write_log(sha)
            say(f"{out}: sha256 {sha}")
            result["sha256"] = sha
            # both outputs are in place (atomically): the state and its snapshots are spent,
            # and a rerun (a params edit, --force) trains afresh
            state_path.unlink(missing_ok=True)
            shutil.rmtree(state_path.parent / "snapshots", ignore_errors=True)
            with contextlib.suppress(OSError):   # kept when set-aside states lie there
                state_path.parent.rmdir()
        if info.world > 1:
            dist.barrier()
    else:
        say(f"stopped at step {step}/{total}; state in {state_path}; run again to resume")
    model.cond_drop_rate = runner.drop_rate
    if info.owns_group:
        dist.destroy_process_group()
    return result


# ---------------------------------------------------------------------------------------
# throughput benchmark

PEAK_TFLOPS = {  # dense tensor-core peaks per GPU (fp32: no TF32), SXM parts
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
}


def step_flops(model, subnet: Subnet | None, batch: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward), as nanoGPT's MFU
    counts them: 6 x (matmul weights each token passes through) x tokens (qkv, proj, fc1, fc2
    of the layers active at the token's scale, word embedding, head), plus 12 x width x the
    (query, key) pairs that block-causal attention scores at each layer. The per-sample
    AdaLN projections and activation recomputation are left out."""
    C = model.width
    H = model.blocks[0].ffn.fc1.out_features
    per_block = 4 * C * C + 2 * C * H
    fixed = C * model.cvae + C * model.vocab_size
    s = subnet or Subnet.full(model.depth, model.num_scales)
    sizes = [p * p for p in model.patch_nums]
    weights = sum(n * (len(s.layers_at(k)) * per_block + fixed) for k, n in enumerate(sizes))
    pairs = 0
    for i in range(model.depth):   # each active scale's queries see the active tokens up to it
        seen = 0
        for k, n in enumerate(sizes):
            if s.runs(i, k):
                seen += n
                pairs += n * seen
    return (6.0 * weights + 12.0 * C * pairs) * batch


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def bench_train(depths, batches, dtypes, probs, steps=5, warmup=2, device="cpu",
                subnet_depth=None, bridge=6, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                activation_checkpointing=False, attentions=("masked",), accum=1,
                compiled=False, trace=None, drop_path=None, echo=print) -> pd.DataFrame:
    """Random-weight VAR-d{depth} (width 64 d, d heads, vocabulary 4096) on random tokens.

    One row per (depth, batch per GPU, dtype, subnet probability, attention); a step is
    `accum` micro-batches of `batch` per process, then the all-reduce and AdamW update,
    as in training. trace: write the GPU kernel table of one step of the first row there.
    drop_path: the stochastic-depth rate; None is the reference's 0.1 x depth / 24."""
    import itertools

    from variant.models import VAR
    from variant.models.vqvae import MultiScaleQuantizer
    from variant.stages.profile import git_commit
    from variant.util.provenance import device_name
    info = init_distributed(device)
    cuda = info.device.type == "cuda"
    commit = git_commit()
    rows = []
    for depth, batch, dtype, p, attention in itertools.product(depths, batches, dtypes, probs, attentions):
        torch.manual_seed(0)
        dp = 0.1 * depth / 24 if drop_path is None else drop_path
        with info.device:   # initialised where it runs: a 2B-parameter init on the CPU takes long
            model = VAR(depth=depth, patch_nums=patch_nums, drop_path_rate=dp).train()
        model.attention = attention
        if activation_checkpointing:
            enable_activation_checkpointing(model)
        if compiled:
            compile_blocks(model)
        quant = MultiScaleQuantizer(4096, 32, patch_nums).to(info.device).eval().requires_grad_(False)
        opt = make_optimizer(model, 1e-6, (0.9, 0.95), 0.05, info.device)
        scaler = torch.amp.GradScaler(info.device.type, enabled=dtype == "fp16")
        runner = StepRunner(model, quant, opt, scaler, info, dtype, 1.0, batch, accum, 0)
        sub = Subnet(depth, subnet_depth or max(2, depth // 2), min(bridge, len(patch_nums)), len(patch_nums))
        g = torch.Generator().manual_seed(1)
        G = runner.global_batch
        tokens = torch.randint(0, 4096, (G, model.L), generator=g).pin_memory() if cuda else \
            torch.randint(0, 4096, (G, model.L), generator=g)
        labels = torch.randint(0, 1000, (G,), generator=g)
        fetch = lambda pos: (tokens[pos], labels[pos])  # noqa: E731
        oom, flops, t = False, 0.0, 0.0
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(info.device)
        try:
            for i in range(warmup + steps):
                use = draw_subnet(0, i, p)
                if i == warmup:
                    if cuda:
                        torch.cuda.synchronize(info.device)
                    t0 = time.perf_counter()
                runner.run(i, fetch, sub if use else None)
                if i >= warmup:
                    flops += step_flops(model, sub if use else None, G)
            if cuda:
                torch.cuda.synchronize(info.device)
            t = time.perf_counter() - t0
            if trace and cuda and not rows:
                from torch.profiler import ProfilerActivity, profile

                from variant.stages.profile import kernel_table
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    runner.run(warmup + steps, fetch, sub if draw_subnet(0, warmup + steps, p) else None)
                    torch.cuda.synchronize(info.device)
                Path(trace).parent.mkdir(parents=True, exist_ok=True)
                write_text(trace, kernel_table(prof, top=50))
        except torch.OutOfMemoryError:
            oom = True
        if cuda:
            peak = torch.cuda.max_memory_allocated(info.device) / 2**20
        else:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        gpu = device_name(info.device)
        peak_flops = next((v.get(dtype) for k, v in PEAK_TFLOPS.items() if k in gpu), None)
        tps = math.nan if oom else steps * G * model.L / t
        mfu = flops / t / (peak_flops * 1e12 * info.world) if peak_flops and not oom else math.nan
        rows.append({"gpu": gpu, "n_gpus": info.world, "depth": depth, "batch_per_gpu": batch,
                     "accum": accum, "dtype": dtype, "subnet_prob": float(p), "attention": attention,
                     "activation_checkpointing": bool(activation_checkpointing),
                     "compiled": bool(compiled), "drop_path": float(dp),
                     "tokens_per_s": tps, "step_s": math.nan if oom else t / steps, "mfu": mfu,
                     "peak_mib": peak, "oom": oom, "seed": 0, "git_commit": commit,
                     "torch_version": torch.__version__})
        echo(f"d{depth} batch {batch}/gpu x{accum} x{info.world} {dtype} p={p} {attention}"
             f"{' compiled' if compiled else ''}{' ckpt' if activation_checkpointing else ''}"
             f" drop-path {dp:g}: "
             + ("OOM" if oom else f"{tps:,.0f} tokens/s, MFU {mfu:.3f}, peak {peak:,.0f} MiB"))
        del model, opt, runner
    df = pd.DataFrame(rows)
    df.attrs["slug"] = device_slug(info.device)
    df.attrs["main"] = info.main
    if info.owns_group:
        dist.destroy_process_group()
    return df


# ---------------------------------------------------------------------------------------
# command line

def add_parser(sub):
    p = sub.add_parser("train", help="progressive supernet training (Algorithm 1) and baselines")
    p.add_argument("--profile", default=None)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--run", required=True, help="progressive_d<d> | fixed_p<p>_d<d> | skipall_d<d>")
    p.add_argument("--init", required=True, help="pretrained VAR checkpoint")
    p.add_argument("--vae", required=True, help="the VQVAE the tokens were made with")
    p.add_argument("--tokens", required=True, help="variant tokenize output directory")
    p.add_argument("--out", required=True, help="final supernet, e.g. artifacts/P/checkpoints/RUN.pth")
    p.add_argument("--log", required=True, help="per-step log parquet")
    p.add_argument("--state-dir", default=None, help="resume state (default: beside the log, state/)")
    p.add_argument("--snapshot-dir", default=None, help="keep snapshots here, as e<epoch>.pth")
    p.add_argument("--snapshot-epochs", type=int, nargs="*", default=[],
                   help="keep the weights after these epochs (1-based), in --snapshot-dir")
    p.add_argument("--epochs-override", type=int, nargs=3, metavar=("E1", "E2", "E3"), default=None,
                   help="phase lengths instead of params train.phases")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--micro-batch", type=int, default=None, help="per process (default: global / processes)")
    p.add_argument("--device", default=None)
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the blocks (default: on CUDA)")
    p.add_argument("--flips", choices=["coin", "both"], default="coin")
    p.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels")
    p.add_argument("--log-every", type=int, default=None, metavar="STEPS",
                   help="without a terminal, a progress line every STEPS steps (default: 20 a run; 0: none)")
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_main)

    b = _bench_parsers(sub).add_parser("train", help="training throughput of a random VAR on random tokens")
    b.add_argument("--depth", type=int, nargs="+", default=[16])
    b.add_argument("--batch-per-gpu", type=int, nargs="+", default=[16])
    b.add_argument("--dtype", nargs="+", choices=list(AUTOCAST), default=["bf16"])
    b.add_argument("--subnet-prob", type=float, nargs="+", default=[0.0, 1.0])
    b.add_argument("--subnet-depth", type=int, default=None, help="default: depth // 2")
    b.add_argument("--bridge", type=int, default=6)
    b.add_argument("--patch-nums", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--activation-checkpointing", action="store_true")
    b.add_argument("--attention", nargs="+", choices=["masked", "per_scale", "flex"], default=["masked"])
    b.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    b.add_argument("--compile", action="store_true", help="torch.compile each block")
    b.add_argument("--trace", default=None, help="write a GPU kernel table of one step (first row) here")
    b.add_argument("--drop-path", type=float, default=None,
                   help="stochastic-depth rate (default: the reference's 0.1 x depth / 24; 0 turns it off)")
    b.add_argument("--device", default=None, help="default: cuda if available")
    b.add_argument("--out", default=None, help="default: results/benchmarks/train_<device>.parquet")
    b.set_defaults(func=_bench_main)


def _main(args) -> int:
    from variant.config import load_params
    cfg = load_params(args.params, args.profile)
    flag = {"stop": False}

    def on_signal(signum, frame):   # SLURM pre-emption: save at the next step and leave
        flag["stop"] = True
    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, on_signal)
    r = train(cfg, args.run, args.init, args.vae, args.tokens, args.out, args.log, args.state_dir,
              args.epochs_override, args.resume, args.micro_batch, args.device, args.stop_after,
              args.activation_checkpointing, args.flips, args.deterministic,
              stop_flag=lambda: flag["stop"], compiled=args.compile, snapshot_dir=args.snapshot_dir,
              snapshot_epochs=args.snapshot_epochs, params=args.params, log_every=args.log_every)
    if r["finished"] or args.stop_after is not None:
        return 0
    print(f"variant train: interrupted at step {r['step']}; state saved, re-run to resume", file=sys.stderr)
    return 1


def _bench_main(args) -> int:
    from variant.util.provenance import write_parquet
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    df = bench_train(args.depth, args.batch_per_gpu, args.dtype, args.subnet_prob, args.steps, args.warmup,
                     device, args.subnet_depth, args.bridge, tuple(args.patch_nums),
                     args.activation_checkpointing, args.attention, args.accum, args.compile, args.trace,
                     args.drop_path)
    if not df.attrs["main"]:
        return 0
    out = Path(args.out or f"results/benchmarks/train_{df.attrs['slug']}.parquet")
    key = ["gpu", "n_gpus", "depth", "batch_per_gpu", "accum", "dtype", "subnet_prob", "attention",
           "activation_checkpointing", "compiled", "drop_path"]
    if out.is_file():   # keep earlier rows, replacing re-measured configurations
        old = pd.read_parquet(out)
        if "drop_path" not in old:   # rows measured before the option trained without drop-path
            old["drop_path"] = 0.0
        df = pd.concat([old, df]).drop_duplicates(key, keep="last").reset_index(drop=True)
    write_parquet(df, out)
    print(f"{out}: {len(df)} row(s)")
    return 0
