"""The `train` section of params.yaml as a typed object (validated by params.schema.json)."""
from __future__ import annotations

from dataclasses import dataclass

from variant import names
from variant.training.schedule import same_run_at_depth


@dataclass(frozen=True)
class Optimizer:
    """Table 6: AdamW with a constant lr, no warm-up."""
    lr: float
    weight_decay: float
    grad_clip: float
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass(frozen=True)
class TrainParams:
    profile: str
    config_hash: str              # of the whole params profile: keys the resume state, provenance
    device: str
    seed: int
    batch_size: int               # the global batch
    bridge: int                   # the subnet's bridge N (skip-all runs use 0)
    phases: dict[int, tuple[int, int, int]]   # subnet depth -> epochs of phases 1, 2, 3 (Table 7)
    optimizer: Optimizer
    precision: str                # fp32 | fp16 (autocast + GradScaler) | bf16 (autocast)
    drop_path: float              # stochastic depth of the last block (linear from 0 at the first)
    checkpoint_every: int         # optimizer steps between resume states
    mixup_alpha: float = 0.0
    randaugment: tuple[int, int] | None = None   # the tokens must have been made with the same
    compile: bool | None = None   # torch.compile the blocks; None: on CUDA only
    micro_batch: int | None = None   # samples a process runs at once, at most; None: its whole share
    params_file: str = "params"   # named in errors

    @classmethod
    def from_config(cls, cfg: dict, params_file="params") -> "TrainParams":
        """From load_params' result (one profile, already validated)."""
        t, o = cfg["train"], cfg["train"]["optimizer"]
        augment = t.get("augment", {})
        ra = augment.get("randaugment")
        return cls(profile=cfg.get("profile", "?"), config_hash=cfg["config_hash"],
                   device=cfg.get("device", "cpu"), seed=int(t["seed"]), batch_size=int(t["batch_size"]),
                   bridge=int(t["bridge"]),
                   phases={int(k): tuple(int(e) for e in v) for k, v in t["phases"].items()},
                   optimizer=Optimizer(o["lr"], o["weight_decay"], float(o["grad_clip"]),
                                       tuple(o.get("betas", (0.9, 0.95)))),
                   precision=t["precision"], drop_path=float(t["drop_path"]),
                   checkpoint_every=int(t["checkpoint_every"]),
                   mixup_alpha=float(augment.get("mixup_alpha") or 0.0),
                   randaugment=None if ra is None else tuple(ra), compile=t.get("compile"),
                   micro_batch=t.get("micro_batch"), params_file=str(params_file))

    def run_phases(self, run: names.Run, override=None) -> tuple[int, int, int]:
        """The run's epochs per phase, checked. A phase may be empty (snapshot runs stop after
        phase 1, an override 0 0 1 trains phase 3 only), but none may be negative and the run
        must train at least one epoch: else the "trained" checkpoint is its init."""
        if override is not None:
            phases, where = tuple(int(e) for e in override), "--epochs-override"
        else:
            where = f"{self.params_file}: profiles.{self.profile}.train.phases"
            if run.subnet_depth not in self.phases:
                valid = ", ".join(same_run_at_depth(run, d) for d in sorted(self.phases))
                raise ValueError(f"{where}: run {run.name} needs phase lengths for subnet depth "
                                 f"{run.subnet_depth}, which has none (valid runs: {valid}; "
                                 "or pass --epochs-override)")
            phases, where = self.phases[run.subnet_depth], f"{where}.{run.subnet_depth}"
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
