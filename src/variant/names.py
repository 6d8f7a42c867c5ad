"""The one place run and configuration names are built and parsed.

A run is a set of weights: `pretrained` (the released or tiny pre-trained VAR), a
training (`progressive_d16`, `fixed_p0.2_d16`, `skipall_d16`), the same training with
another seed (`progressive_d16_s1`: train.seed replaced by 1), or a training's snapshot
after some epochs (`fixed_p0.2_d16@e5`). A configuration is what one sampling pass runs:
`full`, a bridge/flexible split `d16_N6` (paper Eq. 3), or a subnet on explicit 1-based
scales `d16_S7-8-9-10` (Table 1). The regular expressions below are also Snakemake's
wildcard constraints (`WILDCARDS`), so a name the rules accept is one this module parses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from variant.models.supernet import Subnet

PRETRAINED = "pretrained"
FULL = "full"
RUN_KINDS = ("pretrained", "progressive", "fixed", "skipall")

_P = r"[0-9]*\.?[0-9]+"
_TRAINED = rf"progressive_d(?P<pd>\d+)|fixed_p(?P<p>{_P})_d(?P<fd>\d+)|skipall_d(?P<sd>\d+)"
_SEED = r"(?:_s(?P<seed>\d+))?"
RUN_RE = rf"{PRETRAINED}|(?:{_TRAINED}){_SEED}(?:@e(?P<epoch>\d+))?"
CONFIG_RE = rf"{FULL}|d(?P<d>\d+)_N(?P<n>\d+)|d(?P<sd>\d+)_S(?P<scales>\d+(?:-\d+)*)"

# Snakemake wildcard_constraints: the same patterns, without named groups
WILDCARDS = {
    "run": re.sub(r"\?P<\w+>", "", RUN_RE),
    "config": re.sub(r"\?P<\w+>", "", CONFIG_RE),
    "shard": r"\d{5}",
    "split": r"train|eval",
}
# A train job's run: a training, never pretrained nor a snapshot (its job keeps those)
TRAINED_RUN_WILDCARD = re.sub(r"\?P<\w+>", "", f"(?:{_TRAINED}){_SEED}")


def progressive(d: int) -> str:
    return f"progressive_d{d}"


def fixed_ratio(p: float, d: int) -> str:
    return f"fixed_p{p:g}_d{d}"


def skip_all(d: int) -> str:
    return f"skipall_d{d}"


def with_seed(run: str, seed: int) -> str:
    """The training `run` with its seed replaced by `seed` (a replica for seed-to-seed spread)."""
    return f"{run}_s{seed}"


def snapshot(run: str, epoch: int) -> str:
    """A trained run's weights after `epoch` epochs (the paper's 1-based count)."""
    return f"{run}@e{epoch}"


def zones(d: int, n: int) -> str:
    """Subnet d on the scales after the bridge zone 1..n."""
    return f"d{d}_N{n}"


def on_scales(d: int, scales) -> str:
    """Subnet d on explicit 1-based scales."""
    return f"d{d}_S" + "-".join(str(k) for k in scales)


def grid_config(d: int, n: int, num_scales: int) -> str:
    """The (d, N) grid's name: N = K runs every scale at full depth."""
    return FULL if n >= num_scales else zones(d, n)


@dataclass(frozen=True)
class Run:
    name: str
    kind: str                       # one of RUN_KINDS
    subnet_depth: int | None = None
    p: float | None = None          # fixed ratio's subnet probability
    epoch: int | None = None        # a snapshot's epoch
    seed: int | None = None         # a replica's training seed (None: the profile's train.seed)

    @property
    def base(self) -> str:
        """The training a snapshot belongs to (the name itself for a final run)."""
        return self.name.partition("@")[0]

    @property
    def family(self) -> str:
        """The name without its seed (a snapshot keeps its epoch): what the seed replicas
        of one training share."""
        if self.seed is None:
            return self.name
        base = self.base
        return base[:base.rindex("_s")] + self.name[len(base):]


def parse_run(name: str) -> Run:
    m = re.fullmatch(RUN_RE, name)
    if not m:
        raise ValueError(f"run {name!r} is not {PRETRAINED}, progressive_d<d>, fixed_p<p>_d<d> "
                         "or skipall_d<d> (another seed adds _s<seed>, a snapshot @e<epoch>)")
    epoch = int(m["epoch"]) if m["epoch"] else None
    seed = int(m["seed"]) if m["seed"] else None
    if name == PRETRAINED:
        return Run(name, "pretrained")
    if m["pd"]:
        return Run(name, "progressive", int(m["pd"]), epoch=epoch, seed=seed)
    if m["fd"]:
        p = float(m["p"])
        if not 0 <= p <= 1:
            raise ValueError(f"run {name!r}: probability {p} is outside 0..1")
        return Run(name, "fixed", int(m["fd"]), p, epoch, seed)
    return Run(name, "skipall", int(m["sd"]), epoch=epoch, seed=seed)


@dataclass(frozen=True)
class Config:
    name: str
    kind: str                       # full | zones | scales
    subnet_depth: int | None = None
    bridge: int | None = None       # zones: the bridge zone's last scale N
    scales: tuple[int, ...] = ()    # scales: the 1-based scales the subnet runs

    def subnet(self, depth: int, num_scales: int) -> Subnet:
        if self.kind == "full":
            return Subnet.full(depth, num_scales)
        if self.kind == "zones":
            return Subnet(depth, self.subnet_depth, self.bridge, num_scales)
        return Subnet.on_scales(depth, self.subnet_depth, {k - 1 for k in self.scales}, num_scales)


def parse_config(name: str) -> Config:
    m = re.fullmatch(CONFIG_RE, name)
    if not m:
        raise ValueError(f"configuration {name!r} is not `{FULL}`, `d<d>_N<N>` or `d<d>_S<k>-<k>...`")
    if name == FULL:
        return Config(name, "full")
    if m["d"]:
        return Config(name, "zones", int(m["d"]), int(m["n"]))
    return Config(name, "scales", int(m["sd"]), scales=tuple(int(k) for k in m["scales"].split("-")))


def subnet_of(config: str, depth: int, num_scales: int) -> Subnet:
    """The Subnet a configuration name runs on a depth-`depth`, `num_scales`-scale model."""
    return parse_config(config).subnet(depth, num_scales)
