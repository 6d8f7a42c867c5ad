# Stage 6. Every table (CSV + Markdown + LaTeX) and figure (PDF + PNG), one rule each so
# a single target (`snakemake figures/pareto.pdf`) runs only the jobs it needs; then the
# reviewer's paper-check report over everything.

def metric_rows(runs):
    return [f"{R}/metrics/{run}/{cfg}.parquet" for run, cfgs in runs.items() for cfg in cfgs]


def report_outputs(item):
    kind, _ = dag.REPORT_ITEMS[item]
    if kind == "table":
        return [f"{R}/tables/{item}.{ext}" for ext in ("csv", "md", "tex")]
    return [f"figures/{item}.{ext}" for ext in ("pdf", "png")]


def report_checkpoints(item):
    """Figure 7 samples from checkpoints: the progressive run at each phase end."""
    return [checkpoint(run) for _, run in dag.fig7_runs(P)] if item == "fig7_evolution" else []


for _item, (_kind, _extra) in dag.REPORT_ITEMS.items():
    _ckpts = report_checkpoints(_item)
    rule:
        name: f"report_{_item}"
        input:
            metrics=metric_rows(dag.report_runs(P, _item)),
            profiling=[f"{R}/profiling.parquet"] if "profiling" in _extra else [],
            logs=[f"{R}/train/{run}.parquet" for run in dag.report_logs(P, _item)],
            ckpts=list(dict.fromkeys(checkpoint_input(run) for _, run in dag.fig7_runs(P))) if _ckpts else [],
            vae=[VAE] if _ckpts else [],
        output: report_outputs(_item)
        params: item=_item, knobs=knobs("train", "sample"), tables=f"{R}/tables", report_dir=R,
                ckpts=["--checkpoints", *_ckpts, "--vae", VAE] if _ckpts else []   # tokens, each quoted
        log: f"{LOGS}/report/{_item}.log"
        localrule: not _ckpts   # Figure 7 samples images: a job with the sample resources
        resources: **resources("sample" if _ckpts else "default")
        shell: "{PY} report {PROFILE_ARG:q} --only {params.item:q} --metrics {input.metrics:q} "
               "--profiling {input.profiling:q} --training-logs {input.logs:q} {params.ckpts:q} "
               "--tables-dir {params.tables:q} --figures-dir figures --report-dir {params.report_dir:q} "
               "> {log:q} 2>&1"


rule paper_check:
    input: quality=f"{R}/quality.parquet", profiling=f"{R}/profiling.parquet"
    output: f"{R}/paper_check.md", f"{R}/paper_check.html"
    params: report_dir=R
    log: f"{LOGS}/report/paper_check.log"
    localrule: True
    shell: "{PY} report {PROFILE_ARG:q} --only paper_check --quality {input.quality:q} "
           "--profiling {input.profiling:q} --report-dir {params.report_dir:q} > {log:q} 2>&1"


REPORT_OUTPUTS = [f for item in dag.REPORT_ITEMS for f in report_outputs(item)] + [
    f"{R}/paper_check.md", f"{R}/paper_check.html"]


# Figures 4 and 6: sample grids across depths (at N = bridge) and across N (at the
# deepest subnet), from the progressive supernets.
def grid_inputs(kind):
    T, S = P["train"], P["sample"]
    if kind == "fig4_samples":
        pairs = [("pretrained", "full", f"VAR-d{dag.depth(P)}")] + [
            (f"progressive_d{d}", dag.grid_config(P, d, T["bridge"]), f"d{d}")
            for d in sorted(T["subnet_depths"], reverse=True)]
    else:
        d = max(T["subnet_depths"])
        pairs = [(f"progressive_d{d}", dag.grid_config(P, d, n), f"d{d} N={n}") for n in sorted(S["bridges"], reverse=True)]
    return pairs


for _fig in ("fig4_samples", "fig6_samples"):
    rule:
        name: f"report_{_fig}"
        input: [f"{A}/samples/{run}/{cfg}.npz" for run, cfg, _ in grid_inputs(_fig)]
        output: f"figures/{_fig}.pdf", f"figures/{_fig}.png"
        params: titles=[t for _, _, t in grid_inputs(_fig)], stem=f"figures/{_fig}"   # `:q` quotes each title
        log: f"{LOGS}/report/{_fig}.log"
        localrule: True
        shell: "{PY} grid {input:q} --titles {params.titles:q} --out {params.stem:q} > {log:q} 2>&1"

REPORT_OUTPUTS += [f"figures/{f}.{e}" for f in ("fig4_samples", "fig6_samples") for e in ("pdf", "png")]
