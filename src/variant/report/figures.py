"""The paper's figures from one profile's results: for each, the frame it plots (a pure
function of `Results`) and the drawing (a matplotlib figure; `variant.report.outputs` saves it).

Choices, stated once:
- The d = D point of Figure 5 is the full network of `Results.full_run`.
- KV cache: the cost model (reference accounting, first profiling batch) as a line, profiled
  values as markers.
- Series differ by marker and line style, so they stay apart in grey print.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import pandas as pd

from variant import dag, names
from variant.config import phases_of
from variant.costmodel import kv_cache_mib
from variant.report.results import Results, get, var_shape

if TYPE_CHECKING:   # matplotlib loads when a figure is drawn, not at import
    from matplotlib.figure import Figure

P_START, P_END = 0.2, 1.0       # Eq. 5: subnet probability in phase 1 and after phase 2


# ---- the data of each figure ----------------------------------------------------------------------

def pareto_points(r: Results) -> pd.DataFrame:
    """Figure 2a: full-network FID vs subnet FID of each fixed ratio p, and the progressive run."""
    d, rows = r.cfg["train"]["fixed_ratios"]["depth"], []
    runs = [(f"p={p}", p, names.fixed_ratio(p, d), "fixed") for p in r.cfg["train"]["fixed_ratios"]["p"]]
    for label, p, run, kind in [*runs, ("progressive", math.nan, names.progressive(d), "progressive")]:
        full, subnet = r.q(run, names.FULL), r.grid(run, d, r.bridge)
        rows.append(dict(label=label, p=p, run=run, kind=kind, full_fid=get(full, "fid"),
                         subnet_fid=get(subnet, "fid"), full_row=full, subnet_row=subnet,
                         **{f"{net}_fid_{end}": get(row, f"fid_ci_{end}")   # bootstrap interval, if any
                            for net, row in (("full", full), ("subnet", subnet)) for end in ("low", "high")}))
    return pd.DataFrame(rows)


def ratio_epochs(r: Results) -> pd.DataFrame:
    """Figure 2c: full-network and subnet FID of each fixed ratio p at the early epoch (the
    end of phase 1, from the run's snapshot) and at the end of training."""
    ratios, rows = r.cfg["train"]["fixed_ratios"], []
    early, last = dag.fig2c_epoch(r.cfg), sum(phases_of(r.cfg, ratios["depth"]))
    for p in ratios["p"]:
        run = names.fixed_ratio(p, ratios["depth"])
        for epoch, source in ((early, names.snapshot(run, early)), (last, run)):
            full, subnet = r.q(source, names.FULL), r.grid(source, ratios["depth"], r.bridge)
            rows.append(dict(p=p, epoch=epoch, run=source, full_fid=get(full, "fid"),
                             subnet_fid=get(subnet, "fid"), full_row=full, subnet_row=subnet))
    return pd.DataFrame(rows, columns=["p", "epoch", "run", "full_fid", "subnet_fid", "full_row", "subnet_row"])


def evolution(r: Results) -> list[tuple]:
    """Figure 7: (title, images, labels) per phase end: the Figure 7 subnet at the training
    bridge, sample.fig7 classes, the same seed in every column so only the weights differ."""
    from variant.report.grids import fixed_samples   # loads torch: only Figure 7 needs it
    runs = dag.fig7_runs(r.cfg)
    if not r.checkpoints:
        return []
    if len(r.checkpoints) != len(runs):
        raise ValueError(f"Figure 7 needs {len(runs)} checkpoints ({', '.join(run for _, run in runs)}), "
                         f"got {len(r.checkpoints)}")
    if r.vae is None:
        raise ValueError("Figure 7 samples images: pass --vae")
    config, f7 = names.grid_config(dag.fig7_depth(r.cfg), r.bridge, r.K), r.cfg["sample"]["fig7"]
    return [(f"{title}\n{config}", *fixed_samples(r.cfg, ckpt, r.vae, config, f7["classes"], f7["per_class"]))
            for (title, _), ckpt in zip(runs, r.checkpoints)]


def loss_curves(r: Results) -> pd.DataFrame:
    """Figure 2b: per-epoch mean loss of the full network and the subnet at the extreme ratios."""
    ratios = r.cfg["train"]["fixed_ratios"]
    runs = {names.fixed_ratio(p, ratios["depth"]): p for p in (min(ratios["p"]), max(ratios["p"]))}
    logs = r.logs[r.logs["run"].isin(runs)] if not r.logs.empty else r.logs
    if logs.empty:
        return pd.DataFrame(columns=["run", "p", "network", "epoch", "loss"])
    long = logs[["run", "epoch", "loss_full", "loss_subnet"]].melt(
        id_vars=["run", "epoch"], var_name="network", value_name="loss").dropna(subset=["loss"])
    curves = long.groupby(["run", "network", "epoch"], as_index=False)["loss"].mean()
    return curves.assign(p=curves["run"].map(runs), network=curves["network"].str.removeprefix("loss_"))


def schedule(r: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3a: the logged subnet probability per epoch, and Eq. 5 from the phase lengths."""
    runs = {names.progressive(d): d for d in r.depths}
    logs = r.logs[r.logs["run"].isin(runs)] if not r.logs.empty else r.logs
    logged = (logs.groupby(["run", "epoch"], as_index=False).agg(subnet_prob=("subnet_prob", "mean"),
                                                                 used_subnet=("used_subnet", "mean"))
              .assign(d=lambda f: f["run"].map(runs)) if not logs.empty
              else pd.DataFrame(columns=["run", "epoch", "subnet_prob", "used_subnet", "d"]))
    eq5 = []
    for d in r.depths:
        e1, e2, e3 = phases_of(r.cfg, d)
        eq5 += [dict(d=d, epoch=e, p=p) for e, p in
                [(0, P_START), (e1, P_START), (e1 + e2, P_END), (e1 + e2 + e3, P_END)]]
    return logged, pd.DataFrame(eq5)


def config_grid(r: Results, mode: str = "reference") -> pd.DataFrame:
    """Figure 5: FID and KV cache of every (d, N) at the first profiling batch; the full
    network is d = D, N = K."""
    shape, batch, rows = var_shape(r.cfg), r.first_batch, []
    points = [(d, n) for d in r.depths for n in r.cfg["sample"]["bridges"]] + [(r.D, r.K)]
    for d, n in points:
        quality = r.q(r.full_run, names.FULL) if d == r.D else r.grid(names.progressive(d), d, n)
        prof = r.p(mode, d, n, batch)
        rows.append(dict(d=d, N=n, fid=get(quality, "fid"), kv_analytic_mib=kv_cache_mib(shape, d, n, batch, mode),
                         kv_measured_mib=None if prof is None or prof["oom"] else prof["kv_mib"]))
    return pd.DataFrame(rows, columns=["d", "N", "fid", "kv_analytic_mib", "kv_measured_mib"]).astype(float)


# ---- figures ----------------------------------------------------------------------------------

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINES = ["-", "--", "-.", ":"]


def _figure(ncols=1, width=4.2, nrows=None, height=3.2):
    """A row of `ncols` axes; with `nrows`, a grid of them (rows of axes)."""
    # Plotting libraries load here, not at import: tables and the paper check draw nothing.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    fig, axes = plt.subplots(nrows or 1, ncols, figsize=(width * ncols, height * (nrows or 1)), squeeze=False)
    return fig, ([list(row) for row in axes] if nrows else list(axes[0]))


def _no_data(ax, what: str):
    ax.text(0.5, 0.5, f"no results for {what}", ha="center", va="center", transform=ax.transAxes)


def _style(i: int) -> dict:
    """Marker and line style by index, so series differ in grey print, not by colour alone."""
    return dict(marker=MARKERS[i % len(MARKERS)], linestyle=LINES[i % len(LINES)])


def _interval(points: pd.DataFrame, net: str):
    """(below, above) distances of the {net} FID interval from the FID, for errorbar; None without one."""
    low, high = points.get(f"{net}_fid_low"), points.get(f"{net}_fid_high")
    if points.empty or low is None or high is None or low.isna().any() or high.isna().any():
        return None
    fid = points[f"{net}_fid"].astype(float)
    return [(fid - low.astype(float)).to_numpy(), (high.astype(float) - fid).to_numpy()]


def plot_pareto(points: pd.DataFrame) -> Figure:
    fig, (ax,) = _figure()
    fixed = points[(points["kind"] == "fixed")].dropna(subset=["full_fid", "subnet_fid"])
    star = points[(points["kind"] == "progressive")].dropna(subset=["full_fid", "subnet_fid"])
    if fixed.empty and star.empty:
        _no_data(ax, "the fixed-ratio and progressive runs")
    ax.plot(fixed["full_fid"], fixed["subnet_fid"], color="0.35", marker="o", linestyle="-", label="fixed ratio p")
    for _, pt in fixed.iterrows():
        ax.annotate(pt["label"], (pt["full_fid"], pt["subnet_fid"]), textcoords="offset points", xytext=(4, 4))
    ax.plot(star["full_fid"], star["subnet_fid"], color="black", marker="*", markersize=14, linestyle="none",
            label="progressive")
    for part, color in ((fixed, "0.35"), (star, "black")):   # FID intervals where evaluate bootstrapped
        err = {axis: _interval(part, net) for axis, net in (("xerr", "full"), ("yerr", "subnet"))}
        if all(e is not None for e in err.values()):
            ax.errorbar(part["full_fid"], part["subnet_fid"], **err, fmt="none", ecolor=color, elinewidth=0.8,
                        capsize=2)
    ax.set(xlabel="full-network FID", ylabel="subnet FID", title="Fixed ratios vs progressive")
    ax.margins(0.15)
    ax.legend()
    return fig


def _full_and_subnet(series: Callable, xlabel: str, ylabel: str, what: str) -> Figure:
    """Two panels, full network and subnet; series(network) gives their lines as (label, x, y)."""
    fig, axes = _figure(ncols=2)
    for ax, network in zip(axes, ("full", "subnet")):
        lines = series(network)
        for i, (label, x, y) in enumerate(lines):
            ax.plot(x, y, label=label, color=f"{0.1 + 0.4 * (i % 2)}", **_style(i))
        if lines:
            ax.legend()
        else:
            _no_data(ax, f"{network}-network {what}")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{network} network" if network == "full" else network)
    return fig


def plot_losses(curves: pd.DataFrame) -> Figure:
    return _full_and_subnet(lambda net: [(f"p={p:g}", c["epoch"], c["loss"]) for p, c in
                                         curves[curves["network"] == net].groupby("p")],
                            "epoch", "training loss", "steps")


def plot_ratio_epochs(points: pd.DataFrame) -> Figure:
    """Figure 2c: FID vs p, full network and subnet, one line per epoch (early, last)."""
    return _full_and_subnet(lambda net: [(f"epoch {e}", line["p"], line[f"{net}_fid"]) for e, line in
                                         points.dropna(subset=[f"{net}_fid"]).groupby("epoch")],
                            "subnet ratio p", "FID", "FIDs")


def plot_evolution(columns: list) -> Figure:
    """Figure 7: one column per phase end, one row per (class, image)."""
    if not columns:
        fig, (ax,) = _figure()
        _no_data(ax, "the phase-end checkpoints")
        ax.axis("off")
        return fig
    n = len(columns[0][1])
    fig, grid = _figure(ncols=len(columns), nrows=n, width=1.6, height=1.6)
    for j, (title, images, labels) in enumerate(columns):
        grid[0][j].set_title(title, fontsize=8)
        for i, ax in enumerate(row[j] for row in grid):
            ax.imshow(images[i], interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if j == 0:
                ax.set_ylabel(f"class {labels[i]}", fontsize=8)
    return fig


def plot_schedule(logged: pd.DataFrame, eq5: pd.DataFrame) -> Figure:
    fig, (ax,) = _figure(width=5)
    for i, (d, line) in enumerate(eq5.groupby("d")):
        ax.plot(line["epoch"], line["p"], color="0.6", linestyle=LINES[i % len(LINES)], label=f"Eq. 5, d={d}")
    for i, (d, log) in enumerate(logged.groupby("d")):   # hollow, shrinking: coinciding points stay visible
        ax.plot(log["epoch"], log["subnet_prob"], color="black", marker=MARKERS[i % len(MARKERS)],
                markerfacecolor="none", markersize=9 - 2 * (i % 3), linestyle="none", label=f"logged, d={d}")
    if logged.empty:
        _no_data(ax, "progressive training logs")
    ax.set(xlabel="epoch", ylabel="subnet probability", ylim=(0, 1.05), title="Sampling schedule")
    ax.legend(fontsize="small")
    return fig


def _fid_and_kv(points: pd.DataFrame, x: str, xlabel: str, title: str) -> Figure:
    """FID on the left axis, KV cache on the right: analytic line, profiled markers."""
    fig, (ax,) = _figure()
    points = points.sort_values(x)
    ax.plot(points[x], points["fid"], color="black", marker="o", linestyle="-", label="FID")
    ax.set(xlabel=xlabel, ylabel="FID", title=title)
    kv = ax.twinx()
    kv.grid(False)
    kv.plot(points[x], points["kv_analytic_mib"], color="0.5", marker="s", linestyle="--",
            label="KV cache (cost model)")
    kv.plot(points[x], points["kv_measured_mib"], color="0.5", marker="^", markerfacecolor="none",
            linestyle="none", markersize=9, label="KV cache (profiled)")
    kv.set_ylabel("KV cache (MiB)")
    if points["fid"].isna().all():
        _no_data(ax, "FID")
    handles = ax.get_legend_handles_labels()[0] + kv.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small", loc="upper center")
    return fig


def plot_depth(points: pd.DataFrame) -> Figure:
    """Figure 5a: points has d, fid, kv_analytic_mib, kv_measured_mib at one N."""
    return _fid_and_kv(points, "d", "subnet depth d", "FID and memory vs depth")


def plot_bridge(points: pd.DataFrame) -> Figure:
    """Figure 5b: the same columns with N, at one d."""
    return _fid_and_kv(points, "N", "bridge scales N", "FID and memory vs N")


def plot_space(points: pd.DataFrame) -> Figure:
    """Figure 5c: KV cache vs FID of every (d, N); colour and marker = d, marker size = N."""
    import seaborn as sns
    fig, (ax,) = _figure(width=5)
    depths = sorted(points["d"].unique())
    colours = sns.color_palette("viridis", len(depths))
    for i, d in enumerate(depths):
        part = points[points["d"] == d].sort_values("N")
        ax.plot(part["kv_analytic_mib"], part["fid"], color=colours[i], linestyle=LINES[i % len(LINES)])
        ax.scatter(part["kv_analytic_mib"], part["fid"], s=25 + 35 * (part["N"] - points["N"].min()), color=colours[i],
                   marker=MARKERS[i % len(MARKERS)], edgecolor="black", label=f"d={d:g}")
    if points["fid"].isna().all():
        _no_data(ax, "FID")
    ax.set(xlabel="KV cache (MiB, cost model)", ylabel="FID", title="Configuration space (size = N)")
    ax.legend(fontsize="small")
    return fig


def _fig5_depth_points(r: Results) -> pd.DataFrame:
    """Figure 5a's points: every depth at the training bridge, and the full network."""
    g = config_grid(r)
    return g[(g["N"] == r.bridge) | (g["d"] == r.D)]


def _fig5_bridge_points(r: Results) -> pd.DataFrame:
    """Figure 5b's points: every N at the deepest subnet."""
    g = config_grid(r)
    return g[g["d"] == max(r.depths)]


# name -> (the data it plots, from the results; its drawing, from that data)
FIGURE_MAKERS: dict[str, tuple[Callable[[Results], object], Callable[[object], Figure]]] = {
    "pareto": (pareto_points, plot_pareto),
    "fig2b_losses": (loss_curves, plot_losses),
    "fig2c_ratios": (ratio_epochs, plot_ratio_epochs),
    "fig3a_schedule": (schedule, lambda frames: plot_schedule(*frames)),
    "fig5_depth": (_fig5_depth_points, plot_depth),
    "fig5_bridge": (_fig5_bridge_points, plot_bridge),
    "fig5_space": (config_grid, plot_space),
    "fig7_evolution": (evolution, plot_evolution),
}
FIGURES = tuple(FIGURE_MAKERS)
IMAGE_FIGURES = ("fig7_evolution",)   # drawn from sampled images: no table of data beside it


def plotted_frame(name: str, data) -> pd.DataFrame | None:
    """A figure's data as one table for its CSV (what `dvc plots` reads), the source rows
    left out; None for a figure of images."""
    if name in IMAGE_FIGURES:
        return None
    if name == "fig3a_schedule":   # the logged probabilities and Eq. 5
        logged, eq5 = data
        return pd.concat([logged.assign(series="logged"), eq5.assign(series="Eq. 5")], ignore_index=True)
    return data.drop(columns=[c for c in ("full_row", "subnet_row") if c in data.columns])
