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


for _item, (_kind, _extra) in dag.REPORT_ITEMS.items():
    rule:
        name: f"report_{_item}"
        input:
            metrics=metric_rows(dag.report_runs(P, _item)),
            profiling=[f"{R}/profiling.parquet"] if "profiling" in _extra else [],
            logs=[f"{R}/train/{run}.parquet" for run in dag.report_logs(P, _item)],
        output: report_outputs(_item)
        params: item=_item, knobs=knobs("train", "sample")
        log: f"{LOGS}/report/{_item}.log"
        localrule: True
        shell: "{PY} report {PROFILE_ARG} --only {params.item} --metrics {input.metrics} "
               "--profiling {input.profiling} --training-logs {input.logs} "
               "--tables-dir {R}/tables --figures-dir figures --report-dir {R} > {log} 2>&1"


rule paper_check:
    input: quality=f"{R}/quality.parquet", profiling=f"{R}/profiling.parquet"
    output: f"{R}/paper_check.md", f"{R}/paper_check.html"
    log: f"{LOGS}/report/paper_check.log"
    localrule: True
    shell: "{PY} report {PROFILE_ARG} --only paper_check --quality {input.quality} "
           "--profiling {input.profiling} --report-dir {R} > {log} 2>&1"


REPORT_OUTPUTS = [f for item in dag.REPORT_ITEMS for f in report_outputs(item)] + [
    f"{R}/paper_check.md", f"{R}/paper_check.html"]
