"""Progressive supernet training (paper Algorithm 1) and its baselines: the `variant train` stage.

    variant train --profile P --run progressive_d4 --init VAR.pth --vae VAE.pth \\
        --tokens artifacts/P/tokens/train --out artifacts/P/checkpoints/progressive_d4.pth \\
        --log artifacts/P/train/progressive_d4/log.parquet
    torchrun --nproc-per-node 8 -m variant.cli train ...     (or srun: SLURM_PROCID/NTASKS)

Runs (variant.names, docs/CONTRACTS.md): `progressive_d{d}` (Algorithm 1), `fixed_p{p}_d{d}`
(a constant subnet probability, Figure 2), `skipall_d{d}` (bridge N = 0, Table 5). Every kind
trains Table 7's E1 + E2' + E3 epochs of depth d (params train.phases), so baselines get the
same budget. The schedule and what keys each random draw: variant.training.schedule; one
optimizer step: variant.training.step; the resume state: variant.training.state.

Outputs: the final supernet in the reference key layout (weights only, its sha256 printed)
and the per-step log (LOG_COLUMNS, `step` the 0-based optimizer step), written at each
checkpoint and at the end, its checkpoint_sha256 the final checkpoint's (empty before).
Once both are written the resume state is removed.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from variant.models.supernet import Subnet
from variant.options import params_options
from variant.stages.tokenize import TokenDataset, progress
from variant.training.distributed import DistInfo, barrier, init_distributed
from variant.training.live import LiveLog
from variant.training.params import TrainParams
from variant.training.schedule import draw_subnet, epoch_order, run_bridge, run_probability, training_run
from variant.training.state import load_state, restore, save_state
from variant.training.step import StepRunner, compile_blocks, enable_activation_checkpointing, make_optimizer
from variant.util.atomic import link_or_copy, temporaries
from variant.util.devices import deterministic_kernels
from variant.util.hashing import sha256_cached

LOG_COLUMNS = ["run", "step", "epoch", "subnet_prob", "used_subnet", "loss", "loss_full",
               "loss_subnet", "lr", "tokens_per_s"]


@dataclass(frozen=True)
class TrainPaths:
    init: Path                       # the pretrained VAR
    vae: Path                        # the VQVAE the tokens were made with
    tokens: Path                     # variant tokenize's output directory
    out: Path                        # the final supernet
    log: Path                        # the per-step log parquet
    state_dir: Path | None = None    # the resume state; None: beside the log, state/
    snapshot_dir: Path | None = None   # snapshots published here as e<epoch>.pth
    dvclive_dir: Path | None = None    # a DVCLive view of the log (variant.training.live)

    @property
    def state(self) -> Path:
        return Path(self.state_dir or Path(self.log).parent / "state") / "state.pt"

    def kept_snapshot(self, epoch: int) -> Path:
        """Where a snapshot waits beside the state until the run ends: Snakemake empties an
        output directory before it reruns an interrupted job."""
        return self.state.parent / "snapshots" / f"e{epoch}.pth"


@dataclass(frozen=True)
class TrainOptions:
    """How to run, not what to train: none of these is in params or the config hash."""
    phases: tuple[int, int, int] | None = None   # instead of params train.phases
    resume: bool = True
    micro_batch: int | None = None   # per process; None: global batch / processes
    device: str | None = None        # None: the profile's
    activation_checkpointing: bool = False
    compiled: bool | None = None     # None: params train.compile
    flips: str = "coin"              # coin | both (variant.training.schedule.epoch_order)
    deterministic: bool = False      # deterministic CUDA kernels (a bitwise resume on GPU)
    snapshot_epochs: tuple[int, ...] = ()   # keep the weights after these epochs (1-based)
    log_every: int | None = None     # progress lines without a terminal; None: ~20 a run, 0: none
    stop_after: int | None = None    # leave after that many steps with the state saved (tests)


def progress_line(run: str, step: int, total: int, loss: float, p: float, tokens_per_s: float,
                  eta_s: float) -> str:
    """One line of training progress for a log without a terminal (loss and tokens/s: the
    mean since the last line)."""
    eta = time.strftime("%H:%M:%S", time.gmtime(eta_s)) if eta_s < 86400 else f"{eta_s / 3600:.0f} h"
    return (f"{run}: step {step}/{total} ({100 * step / total:.0f}%) loss {loss:.4f} p {p:.2f} "
            f"{tokens_per_s:,.0f} tokens/s ETA {eta}")


def open_tokens(paths: TrainPaths, params: TrainParams) -> tuple[TokenDataset, str]:
    """The token set and the VQVAE's sha256, checked to belong together and to params."""
    ds = TokenDataset(paths.tokens)
    vae_sha = sha256_cached(paths.vae)
    if ds.index["vae_sha256"] != vae_sha:
        raise ValueError(f"{paths.tokens}: tokenised with VQVAE sha256 {ds.index['vae_sha256'][:12]}..., "
                         f"but --vae {paths.vae} is {vae_sha[:12]}...; re-run variant tokenize")
    want_ra = None if params.randaugment is None else list(params.randaugment)
    if (want_ra is None) != (ds.index["randaugment"] is None):
        raise ValueError(f"{paths.tokens}: tokens have randaugment={ds.index['randaugment']} but params "
                         f"train.augment.randaugment={want_ra}; re-run variant tokenize to match")
    return ds, vae_sha


def build_models(paths: TrainPaths, params: TrainParams, options: TrainOptions, ds: TokenDataset,
                 device: torch.device):
    """The VAR to train (from paths.init) and the frozen quantiser, on `device`."""
    from variant.models.checkpoint import build_vae, build_var, read_state_dict
    # drop_path is a training-only setting: the weights' keys are unchanged
    model = build_var(read_state_dict(paths.init), str(paths.init), drop_path_rate=params.drop_path)
    if tuple(ds.patch_nums) != model.patch_nums:
        raise ValueError(f"{paths.tokens}: token scales {ds.patch_nums} differ from the VAR's "
                         f"{list(model.patch_nums)}")
    if ds.num_classes > model.num_classes:
        raise ValueError(f"{paths.tokens}: {ds.num_classes} classes but the VAR has {model.num_classes}")
    quant = build_vae(read_state_dict(paths.vae), model.patch_nums, str(paths.vae)).quantize
    quant = quant.to(device).eval().requires_grad_(False)
    model = model.to(device).train()
    if options.activation_checkpointing:
        enable_activation_checkpointing(model)
    compiled = params.compile if options.compiled is None else options.compiled
    if compiled if compiled is not None else device.type == "cuda":
        compile_blocks(model)
    return model, quant


@dataclass(frozen=True)
class Plan:
    """How a run's epochs become optimizer steps of micro-batches."""
    micro: int
    accum: int
    steps_per_epoch: int
    epochs: int

    @property
    def total(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_steps(ds: TokenDataset, global_batch: int, info: DistInfo, options: TrainOptions,
               phases, tokens, micro_batch: int | None = None) -> Plan:
    """micro_batch: params train.micro_batch, the most a process runs at once (--micro-batch
    sets it exactly)."""
    G = global_batch
    micro = options.micro_batch or min(micro_batch or G // info.world, max(G // info.world, 1))
    if micro < 1 or G % (info.world * micro):
        raise ValueError(f"global batch {G} is not {info.world} process(es) x micro-batch {micro} x "
                         "an integer accumulation")
    per_epoch = ds.num_images * (ds.n_flips if options.flips == "both" else 1)
    spe = per_epoch // G
    if spe < 1:
        raise ValueError(f"{tokens}: {per_epoch} samples per epoch, fewer than one global batch of {G}")
    return Plan(micro, G // (info.world * micro), spe, sum(phases))


class Session:
    """One run's moving parts between its set-up and its end: the log rows so far, the
    step, the resume state and the snapshots."""

    def __init__(self, run, params, paths, options, info, ds, model, opt, scaler, runner, subnet,
                 phases, plan, ident, say):
        self.run, self.params, self.paths, self.options, self.info = run, params, paths, options, info
        self.ds, self.model, self.opt, self.scaler, self.runner = ds, model, opt, scaler, runner
        self.subnet, self.phases, self.plan, self.ident, self.say = subnet, phases, plan, ident, say
        self.rows, self.step, self.prov, self.live = [], 0, None, None

    def sweep_partial_states(self) -> None:
        """Remove what a state save cut short left (SIGKILL before its rename): 24 GB at d30,
        which would otherwise stay until the next save, and fill the disk first."""
        if not self.info.main:
            return
        for partial in temporaries(self.paths.state):
            size = partial.stat().st_size / 2**30
            partial.unlink(missing_ok=True)
            self.say(f"removed {partial}: a state save cut short ({size:.1f} GiB)")

    def resume(self) -> None:
        st = load_state(self.paths.state, self.ident, self.info, self.say)
        if st is None:
            return
        restore(st, self.model, self.opt, self.scaler)
        self.rows, self.step = st["log"], st["step"]
        self.say(f"resumed {self.run.name} at step {self.step}/{self.plan.total} (epoch {st['epoch']}) "
                 f"from {self.paths.state}")
        spe, kept = self.plan.steps_per_epoch, self.paths.kept_snapshot
        lost = [e for e in self.options.snapshot_epochs if e * spe <= self.step and not kept(e).is_file()]
        if self.paths.snapshot_dir is not None and lost:
            raise ValueError(f"{kept(lost[0])} is missing and {self.paths.state} is past epoch {lost[0]}; "
                             "rerun with --no-resume to keep it")

    def write_log(self, sha: str = "") -> None:
        from variant.util.atomic import write_parquet
        df = pd.DataFrame(self.rows, columns=LOG_COLUMNS)
        for k, v in (self.prov | {"checkpoint_sha256": sha}).items():
            df[k] = v
        write_parquet(df, self.paths.log)

    def save_state(self) -> None:
        if self.info.main:
            t0 = time.perf_counter()
            save_state(self.paths.state, self.ident, self.model, self.opt, self.scaler, self.step,
                       self.plan.steps_per_epoch, self.params.batch_size, self.rows)
            self.write_log()
            # the SLURM log shows whether a save fits between SIGTERM and SIGKILL
            self.say(f"state after step {self.step} saved in {time.perf_counter() - t0:.1f} s "
                     f"({self.paths.state.stat().st_size / 2**30:.1f} GiB)")
        barrier(self.info)

    def one_step(self, order) -> tuple[float, float, bool]:
        """Train optimizer step self.step of the epoch order `order`; (loss, p, used subnet)."""
        G, spe, seed = self.params.batch_size, self.plan.steps_per_epoch, self.params.seed
        epoch, b = divmod(self.step, spe)
        ids = order[b * G:(b + 1) * G]
        p = run_probability(self.run, epoch, self.phases)
        use = draw_subnet(seed, self.step, p)
        t0 = time.perf_counter()
        loss = self.runner.run(self.step, lambda pos: self.ds.gather(ids[pos]), self.subnet if use else None)
        if self.info.device.type == "cuda":
            torch.cuda.synchronize(self.info.device)
        dt = time.perf_counter() - t0
        if not math.isfinite(loss) and self.params.precision != "fp16":
            raise FloatingPointError(f"{self.run.name}: loss is {loss} at step {self.step}")
        self.rows.append({"run": self.run.name, "step": self.step, "epoch": epoch, "subnet_prob": p,
                          "used_subnet": use, "loss": loss, "loss_full": math.nan if use else loss,
                          "loss_subnet": loss if use else math.nan, "lr": self.opt.param_groups[0]["lr"],
                          "tokens_per_s": G * self.model.L / dt})
        self.step += 1
        return loss, p, use

    def loop(self, stop_flag=None) -> bool:
        """Train to the end, or to a stop; True if stopped (the state is saved)."""
        spe, total, options = self.plan.steps_per_epoch, self.plan.total, self.options
        order_epoch, order = None, None
        bar = progress(total=total, initial=self.step, unit="step", desc=self.run.name) if self.info.main else None
        log_every = max(1, total // 20) if options.log_every is None else options.log_every
        lines = bool(log_every) and (bar is None or bar.disable)
        t_start, step_start = time.perf_counter(), self.step
        try:
            while self.step < total:
                if order_epoch != self.step // spe:
                    order_epoch = self.step // spe
                    order = epoch_order(self.ds, order_epoch, self.params.seed, options.flips)
                loss, p, _ = self.one_step(order)
                if self.live is not None:
                    self.live.add(self.rows[-1])
                step = self.step
                epoch_done = step % spe == 0 and step // spe in options.snapshot_epochs
                if self.paths.snapshot_dir is not None and epoch_done and self.info.main:
                    from variant.models.checkpoint import save_state_dict
                    kept = self.paths.kept_snapshot(step // spe)
                    self.say(f"snapshot after epoch {step // spe}: {kept} sha256 {save_state_dict(self.model, kept)}")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", p=f"{p:.2f}", refresh=False)
                if lines and (step % log_every == 0 or step == total):
                    recent = self.rows[-log_every:]
                    per_step = (time.perf_counter() - t_start) / (step - step_start)
                    self.say(progress_line(self.run.name, step, total, sum(r["loss"] for r in recent) / len(recent),
                                           p, sum(r["tokens_per_s"] for r in recent) / len(recent),
                                           per_step * (total - step)))
                stop = ((options.stop_after is not None and step >= options.stop_after)
                        or bool(stop_flag and stop_flag()))
                if step % self.params.checkpoint_every == 0 or (stop and step < total):
                    self.save_state()
                if stop and step < total:
                    return True
        finally:
            if bar is not None:
                bar.close()
        return False

    def publish(self) -> str:
        """Write the snapshots, the final checkpoint and the log; remove the spent state."""
        from variant.models.checkpoint import save_state_dict
        state = self.paths.state
        if self.info.main:
            for e in self.options.snapshot_epochs if self.paths.snapshot_dir is not None else ():
                link_or_copy(self.paths.kept_snapshot(e), Path(self.paths.snapshot_dir) / f"e{e}.pth")
            sha = save_state_dict(self.model, self.paths.out)
            self.write_log(sha)
            self.say(f"{self.paths.out}: sha256 {sha}")
            # both outputs are in place (atomically): the state and its snapshots are spent,
            # and a rerun (a params edit, --force) trains afresh
            state.unlink(missing_ok=True)
            for partial in temporaries(state):   # a save cut short by SIGKILL: 24 GB at d30
                partial.unlink(missing_ok=True)
            shutil.rmtree(state.parent / "snapshots", ignore_errors=True)
            with contextlib.suppress(OSError):   # kept when set-aside states lie there
                state.parent.rmdir()
        else:
            sha = None
        barrier(self.info)
        return sha


def train(params: TrainParams, run_name: str, paths: TrainPaths, options: TrainOptions = TrainOptions(),
          echo=print, stop_flag=None) -> dict:
    """Algorithm 1 (or a baseline) from paths.init; returns {"finished", "step", "total", "sha256"}.

    stop_flag: a callable polled after each step (a signal arrived): leave with the state
    saved. A resume state of another run or an unreadable one is set aside (load_state).
    """
    from variant.util.provenance import provenance

    run = training_run(run_name)
    if run.seed is not None:   # a seed replica (progressive_d16_s1): its own seed for every draw
        params = replace(params, seed=run.seed)
    phases = params.run_phases(run, options.phases)
    if options.micro_batch is not None and options.micro_batch < 1:   # checked before `or` takes 0 for unset
        raise ValueError(f"--micro-batch: {options.micro_batch} is not a positive number of samples per "
                         "process (leave it out for global batch / processes)")
    info = init_distributed(options.device or params.device)
    with deterministic_kernels() if options.deterministic else contextlib.nullcontext():
        say = echo if info.main else (lambda *a, **k: None)

        ds, vae_sha = open_tokens(paths, params)
        model, quant = build_models(paths, params, options, ds, info.device)
        subnet = Subnet(model.depth, run.subnet_depth, run_bridge(run, params.bridge), model.num_scales)
        plan = plan_steps(ds, params.batch_size, info, options, phases, paths.tokens, params.micro_batch)
        bad = [e for e in options.snapshot_epochs if not 1 <= e <= plan.epochs]
        if bad:
            raise ValueError(f"{run_name}: snapshot epoch {bad[0]} is outside 1..{plan.epochs}")
        if paths.snapshot_dir is not None:
            Path(paths.snapshot_dir).mkdir(parents=True, exist_ok=True)   # the rule's output, even with none kept

        o = params.optimizer
        opt = make_optimizer(model, o.lr, o.betas, o.weight_decay, info.device)
        scaler = torch.amp.GradScaler(info.device.type, enabled=params.precision == "fp16")
        runner = StepRunner(model, quant, opt, scaler, info, params.precision, o.grad_clip, plan.micro, plan.accum,
                            params.seed, params.mixup_alpha)
        ident = {"run": run_name, "config_hash": params.config_hash, "global_batch": params.batch_size,
                 "phases": list(phases), "steps_per_epoch": plan.steps_per_epoch, "flips": options.flips,
                 "tokens_count": len(ds), "init_sha256": sha256_cached(paths.init), "vae_sha256": vae_sha}
        live = LiveLog(paths.dvclive_dir) if paths.dvclive_dir is not None and info.main else None
        session = Session(run, params, paths, options, info, ds, model, opt, scaler, runner, subnet, phases, plan,
                          ident, say)
        session.sweep_partial_states()
        if options.resume:
            session.resume()
        if live is not None:
            live.replay(session.rows)
            session.live = live
        session.prov = provenance({"profile": params.profile, "config_hash": params.config_hash}, params.seed,
                                  info.device)
        say(f"{run_name}: {plan.epochs} epochs (phases {'/'.join(map(str, phases))}) x {plan.steps_per_epoch} "
            f"steps of {params.batch_size} = {plan.total} steps; {info.world} process(es) x micro-batch "
            f"{plan.micro} x accumulation {plan.accum}; subnet d={run.subnet_depth} N={subnet.bridge}; "
            f"drop-path {model.drop_path_rate:g}; {params.precision} on {info.device}")
        stopped = session.loop(stop_flag)
        result = {"finished": not stopped, "step": session.step, "total": plan.total, "sha256": None}
        if not stopped:
            result["sha256"] = session.publish()
        else:
            say(f"stopped at step {session.step}/{plan.total}; state in {paths.state}; run again to resume")
        if live is not None:
            live.close()
        model.cond_drop_rate = runner.drop_rate
        if info.owns_group:
            dist.destroy_process_group()
        return result


# ---------------------------------------------------------------------------------------
# command line

def add_parser(sub):
    p = sub.add_parser("train", help="progressive supernet training (Algorithm 1) and baselines")
    params_options(p)
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
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the resume state if it is this run's (default: on)")
    p.add_argument("--micro-batch", type=int, default=None, help="per process (default: global / processes)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the profile's `device`)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block in the backward pass (less memory, more time)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the blocks (default: params train.compile, else on CUDA)")
    p.add_argument("--flips", choices=["coin", "both"], default="coin",
                   help="coin: one flip or not per image and epoch; both: an epoch reads every stored flip")
    p.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels")
    p.add_argument("--log-every", type=int, default=None, metavar="STEPS",
                   help="without a terminal, a progress line every STEPS steps (default: 20 a run; 0: none)")
    p.add_argument("--dvclive", default=None, metavar="DIR",
                   help="also log loss, p and tokens/s per step with DVCLive in DIR (dvc plots show)")
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_main)


def _main(args) -> int:
    from variant.config import load_params
    params = TrainParams.from_config(load_params(args.params, args.profile), args.params)
    flag = {"stop": False}

    def on_signal(signum, frame):   # SLURM pre-emption: save at the next step and leave
        flag["stop"] = True
    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, on_signal)
    paths = TrainPaths(args.init, args.vae, args.tokens, args.out, args.log, args.state_dir, args.snapshot_dir,
                       args.dvclive)
    options = TrainOptions(args.epochs_override, args.resume, args.micro_batch, args.device,
                           args.activation_checkpointing, args.compile, args.flips, args.deterministic,
                           tuple(args.snapshot_epochs), args.log_every, args.stop_after)
    r = train(params, args.run, paths, options, stop_flag=lambda: flag["stop"])
    if r["finished"] or args.stop_after is not None:
        return 0
    print(f"variant train: interrupted at step {r['step']}; state saved, re-run to resume", file=sys.stderr)
    return 1
