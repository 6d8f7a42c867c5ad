"""What the active profile asks for: runs, their checkpoints, and the configurations
sampled from each, derived from params.yaml alone.

The Snakefile builds its DAG from these functions and dvc.yaml is generated from them,
so the two can never disagree about which jobs a table needs.
"""
from __future__ import annotations


def depth(P: dict) -> int:
    return P["model"]["var"]["depth"]


def num_scales(P: dict) -> int:
    return len(P["model"]["patch_nums"])


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


def table_runs(P: dict) -> dict[str, dict[str, list[str]]]:
    """{table or figure: {run: [configuration, ...]}}: the quality rows each one reads."""
    T, S = P["train"], P["sample"]
    bridge, depths = T["bridge"], T["subnet_depths"]
    fd = T["fixed_ratios"]["depth"]
    progressive_at_bridge = {f"progressive_d{d}": ["full", grid_config(P, d, bridge)] for d in depths}
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
        "pareto": {fixed_ratio_run(p, fd): ["full", grid_config(P, fd, bridge)] for p in T["fixed_ratios"]["p"]}
                  | ({f"progressive_d{fd}": ["full", grid_config(P, fd, bridge)]} if fd in depths else {}),
        "fig5": grid,
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
    A = f"artifacts/{P['profile']}"
    return f"{A}/pretrained/var.pth" if run == "pretrained" else f"{A}/checkpoints/{run}.pth"
