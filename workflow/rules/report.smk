# Stage 6. Every table (CSV + Markdown + LaTeX), every figure (PDF + PNG), and the
# reviewer's paper-check report.

TABLES = ["table1", "table2", "table3", "table4", "table5", "table7", "table8"]
FIGURES = ["pareto", "fig2b_losses", "fig3a_schedule", "fig5_depth", "fig5_bridge", "fig5_space"]
REPORT_OUTPUTS = (
    [f"{R}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    + [f"figures/{f}.{ext}" for f in FIGURES for ext in ("pdf", "png")]
    + [f"{R}/paper_check.md", f"{R}/paper_check.html"]
)


rule report:
    input: quality=f"{R}/quality.parquet", profiling=f"{R}/profiling.parquet",
           logs=[f"{A}/train/{run}/log.parquet" for run in TRAINED_RUNS]
    output: REPORT_OUTPUTS
    log: f"{LOGS}/report.log"
    localrule: True
    shell: "{PY} report {PROFILE_ARG} --quality {input.quality} --profiling {input.profiling} "
           "--training-logs {input.logs} --tables-dir {R}/tables --figures-dir figures "
           "--report-dir {R} > {log} 2>&1"
