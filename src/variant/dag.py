"""What the active profile asks for: runs, their checkpoints, and the configurations
sampled from each, derived from params.yaml alone.

The Snakefile builds its DAG from these functions and dvc.yaml is generated from them,
so the two can never disagree about which jobs a table needs.
"""
from __future__ import annotations

from variant.config import phases_of


def depth(P: dict) -> int:
    return P["model"]["var"]["depth"]


def num_scales(P: dict) -> int:
    return len(P["model"]["patch_nums"])


SAMPLE_KNOBS = ("per_class", "cfg", "top_k", "top_p", "batch_size", "shard_size", "seed")   # decide the pixels


def shard_layout(P: dict) -> tuple[int, int]:
    """(images per shard, shards) of one configuration: per_class x num_classes images in
    shards of sample.shard_size (null: one shard). Each shard is one sampling job."""
    n = P["sample"]["per_class"] * P["data"]["num_classes"]
    size = min(P["sample"]["shard_size"] or n, n)
    return size, -(-n // size)


def grid_config(P: dict, d: int, n: int) -> str:
    """Configuration of subnet d with bridge N; N = K runs every scale at full depth."""
    return "full" if n >= num_scales(P) else f"d{d}_N{n}"


def table1_configs(P: dict) -> list[str]:
    """Table 1: the subnet on early (r1-r3), middle (r4-r6) or late (r7-rK) scales."""
    d, K = P["sample"]["table1_depth"], num_scales(P)
    groups = ([1, 2, 3], [4, 5, 6], list(range(7, K + 1)))
    return [f"d{d}_S" + "-".join(map(str, g)) for g in groups]


def fixed_ratio_run(p: float, d: int) -> str:
    return f"fixed_p{p:g}_d{d}"


def snapshot_run(run: str, epoch: int) -> str:
    """A trained run's weights after `epoch` epochs (kept by its train job), e.g. fixed_p0.2_d16@e5."""
    return f"{run}@e{epoch}"


def fig7_depth(P: dict) -> int:
    """Figure 7's subnet: the deepest one (the paper's d = 16)."""
    return max(P["train"]["subnet_depths"])


def snapshot_epochs(P: dict, run: str) -> list[int]:
    """Epochs (the paper's 1-based count: the weights after that many epochs) at which a
    trained run also keeps its weights: each fixed ratio at the end of phase 1 (Figure 2c:
    the paper's epoch 5 of 25), and the Figure 7 progressive run at the end of phases 1
    and 2 (its final checkpoint ends phase 3). Derived from train.phases."""
    T = P["train"]
    fd = T["fixed_ratios"]["depth"]
    if run in {fixed_ratio_run(p, fd) for p in T["fixed_ratios"]["p"]}:
        e1, e2, e3 = phases_of(P, fd)
        epochs = [e1]
    elif run == f"progressive_d{fig7_depth(P)}":
        e1, e2, e3 = phases_of(P, fig7_depth(P))
        epochs = [e1, e1 + e2]
    else:
        return []
    return sorted({e for e in epochs if 0 < e < e1 + e2 + e3})


def fig2c_epoch(P: dict) -> int:
    """Figure 2c's early epoch: the end of phase 1 of the fixed ratios' schedule."""
    return phases_of(P, P["train"]["fixed_ratios"]["depth"])[0]


def fig7_runs(P: dict) -> list[tuple[str, str]]:
    """Figure 7's columns: (title, run) at the end of each phase of progressive_d{d}; the
    last is the final checkpoint (a zero-length phase has no column of its own)."""
    d = fig7_depth(P)
    run, (e1, e2, e3) = f"progressive_d{d}", phases_of(P, d)
    kept = snapshot_epochs(P, run)
    return [(f"Phase {i} end (epoch {e})", snapshot_run(run, e) if i < 3 else run)
            for i, e in enumerate((e1, e1 + e2, e1 + e2 + e3), 1) if e in kept or i == 3]


def table_runs(P: dict) -> dict[str, dict[str, list[str]]]:
    """{table or figure: {run: [configuration, ...]}}: the quality rows each one reads."""
    T, S = P["train"], P["sample"]
    bridge, depths = T["bridge"], T["subnet_depths"]
    fd = T["fixed_ratios"]["depth"]
    progressive_at_bridge = {f"progressive_d{d}": ["full", grid_config(P, d, bridge)] for d in depths}
    fixed = {fixed_ratio_run(p, fd): ["full", grid_config(P, fd, bridge)] for p in T["fixed_ratios"]["p"]}
    early = fig2c_epoch(P)
    grid = {f"progressive_d{d}": ["full"] + [grid_config(P, d, n) for n in S["bridges"]] for d in depths}
    tables = {
        "table1": {"pretrained": ["full"] + table1_configs(P)},
        "table2": {"pretrained": ["full"], **progressive_at_bridge},
        "table3": {},
        "table4": {"pretrained": ["full"] + [grid_config(P, d, bridge) for d in depths], **progressive_at_bridge},
        "table5": {f"skipall_d{d}": ["full", f"d{d}_N0"] for d in T["skip_all_depths"]}
                  | {f"progressive_d{d}": ["full", grid_config(P, d, bridge)] for d in T["skip_all_depths"] if d in depths},
        "table7": {},
        "table8": grid,   # its full-depth row is the supernet's full network, as in the paper
        "pareto": fixed | ({f"progressive_d{fd}": ["full", grid_config(P, fd, bridge)]} if fd in depths else {}),
        "fig5": grid,
        "fig2c_ratios": fixed | {snapshot_run(r, early): cfgs for r, cfgs in fixed.items()
                                 if early in snapshot_epochs(P, r)},
    }
    # N = K is the full network, so a grid can name `full` twice
    return {t: {run: list(dict.fromkeys(cfgs)) for run, cfgs in runs.items()} for t, runs in tables.items()}


# Report outputs: name -> (kind, what it reads besides metric rows).
REPORT_ITEMS = {
    "table1": ("table", ()), "table2": ("table", ("profiling",)), "table3": ("table", ("profiling",)),
    "table4": ("table", ()), "table5": ("table", ()), "table7": ("table", ()), "table8": ("table", ()),
    "pareto": ("figure", ()), "fig2b_losses": ("figure", ("logs",)), "fig3a_schedule": ("figure", ("logs",)),
    "fig5_depth": ("figure", ("profiling",)), "fig5_bridge": ("figure", ("profiling",)),
    "fig5_space": ("figure", ("profiling",)),
    "fig2c_ratios": ("figure", ()), "fig7_evolution": ("figure", ("checkpoints",)),
}


def report_runs(P: dict, item: str) -> dict[str, list[str]]:
    """The quality rows one table or figure reads."""
    runs = table_runs(P)
    return runs["fig5"] if item.startswith("fig5") else runs.get(item, {})


def report_logs(P: dict, item: str) -> list[str]:
    """The training runs whose logs a figure reads: Figure 2b the fixed ratios, 3a the
    progressive schedule."""
    if item == "fig2b_losses":
        fd = P["train"]["fixed_ratios"]["depth"]
        return [fixed_ratio_run(p, fd) for p in P["train"]["fixed_ratios"]["p"]]
    if item == "fig3a_schedule":
        return [f"progressive_d{d}" for d in P["train"]["subnet_depths"]]
    return []


def runs_and_configs(P: dict) -> dict[str, list[str]]:
    """{run: sorted configurations} over every table and figure."""
    merged: dict[str, set[str]] = {}
    for runs in table_runs(P).values():
        for run, cfgs in runs.items():
            merged.setdefault(run, set()).update(cfgs)
    return {run: sorted(cfgs) for run, cfgs in sorted(merged.items())}


def trained_runs(P: dict) -> list[str]:
    """Every run that trains a checkpoint (Figure 2b/3a read all of their logs)."""
    T = P["train"]
    runs = [f"progressive_d{d}" for d in T["subnet_depths"]]
    runs += [fixed_ratio_run(p, T["fixed_ratios"]["depth"]) for p in T["fixed_ratios"]["p"]]
    runs += [f"skipall_d{d}" for d in T["skip_all_depths"]]
    return runs


def checkpoint(P: dict, run: str) -> str:
    """The VAR weights a run samples from: pretrained, a trained run's final checkpoint, or
    (run@e<epoch>) the snapshot its train job kept after that epoch."""
    A = f"artifacts/{P['profile']}"
    if "@e" in run:
        base, epoch = run.split("@e")
        return f"{snapshot_dir(P, base)}/e{epoch}.pth"
    return f"{A}/pretrained/var.pth" if run == "pretrained" else f"{A}/checkpoints/{run}.pth"


def snapshot_dir(P: dict, run: str) -> str:
    """Where a trained run's train job keeps its snapshots (e<epoch>.pth; a rule output)."""
    return f"artifacts/{P['profile']}/snapshots/{run}"


def checkpoint_input(P: dict, run: str) -> str:
    """The file or (for a snapshot) the directory a rule depends on to read checkpoint(run)."""
    return snapshot_dir(P, run.split("@e")[0]) if "@e" in run else checkpoint(P, run)
