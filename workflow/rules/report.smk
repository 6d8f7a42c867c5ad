# Stage 6. Every table (CSV + Markdown + LaTeX) and figure (PDF + PNG, and the CSV it plots),
# one rule each so a single target runs only the jobs it needs; Figures 4 and 6 (sample
# grids); then the reviewer's paper check over everything. Each result is also in
# Snakemake's report (`snakemake --report report.html`): a table's CSV, a figure's PNG and
# the paper check's HTML, under the paper section it belongs to, captioned by
# workflow/report/<item>.rst. Paths and items: variant.dag.
import os

from variant.report.figures import IMAGE_FIGURES

report: "../report/workflow.rst"

# Snakemake report: item -> (category, subcategory), by the paper's sections.
REPORT_SECTIONS = {
    "table1": ("Sec. 3 Analysis and method", "3.2 Which scales a subnet can take"),
    "pareto": ("Sec. 3 Analysis and method", "3.3 Fixed subnet ratios"),
    "fig2b_losses": ("Sec. 3 Analysis and method", "3.3 Fixed subnet ratios"),
    "fig2c_ratios": ("Sec. 3 Analysis and method", "3.3 Fixed subnet ratios"),
    "fig3a_schedule": ("Sec. 3 Analysis and method", "Progressive training schedule"),
    "table2": ("Sec. 4 Experiments", "4.2 Main results"),
    "fig4_samples": ("Sec. 4 Experiments", "4.2 Main results"),
    "table3": ("Sec. 4 Experiments", "4.3 Memory"),
    "table4": ("Sec. 4 Experiments", "4.4 Ablations"),
    "table5": ("Sec. 4 Experiments", "4.4 Ablations"),
    "fig5_depth": ("Sec. 4 Experiments", "Configuration space"),
    "fig5_bridge": ("Sec. 4 Experiments", "Configuration space"),
    "fig5_space": ("Sec. 4 Experiments", "Configuration space"),
    "fig6_samples": ("Sec. 4 Experiments", "Configuration space"),
    "table7": ("Sec. 6 Appendix", "6.1 Training details"),
    "fig7_evolution": ("Sec. 6 Appendix", "6.1 Training details"),
    "table8": ("Sec. 6 Appendix", "6.3 Configuration space"),
    "paper_check": ("Paper check", "Measured vs the paper, and the paper vs itself"),
    "findings": ("Paper check", "The paper's claims at this scale"),
}
IN_REPORT = {item: dict(caption=f"../report/{item}.rst", category=category, subcategory=subcategory)
             for item, (category, subcategory) in REPORT_SECTIONS.items()}
# The file of each item that the report shows (the other formats stay files).
SHOWN = {item: next(f for f in dag.report_outputs(P, item) if f.endswith((".csv", ".png")))
         for item in (*dag.REPORT_ITEMS, *dag.SAMPLE_GRIDS)}
# Every file of each item; `rule all` asks for them as plain paths.
ITEM_FILES = {item: dag.report_outputs(P, item) + (
                  [dag.figure_data(P, item)] if kind == "figure" and item not in IMAGE_FIGURES else [])
              for item, (kind, _) in dag.REPORT_ITEMS.items()}
ITEM_FILES |= {item: dag.report_outputs(P, item) for item in dag.SAMPLE_GRIDS}


for _item, (_kind, _extra) in dag.REPORT_ITEMS.items():
    _ckpts = [checkpoint(run) for _, run in dag.fig7_runs(P)] if "checkpoints" in _extra else []
    rule:
        name: f"report_{_item}"
        input:
            metrics=dag.metric_rows(P, dag.report_runs(P, _item)),
            profiling=[dag.profiling(P)] if "profiling" in _extra else [],
            logs=[dag.train_log(P, run) for run in dag.report_logs(P, _item)],
            ckpts=list(dict.fromkeys(checkpoint_input(run) for _, run in dag.fig7_runs(P))) if _ckpts else [],
            vae=[VAE] if _ckpts else [],
        output: [report(f, **IN_REPORT[_item]) if f == SHOWN[_item] else f for f in ITEM_FILES[_item]]
        params: item=_item,   # the keys this item depends on (dag.report_item_params)
                knobs=config_hash({k: dag.lookup(P, k) for k in dag.report_item_params(_item)}), profile=PROFILE_ARG,
                out_dir=lambda w, output: os.path.dirname(output[0]),   # the item writes only there
                ckpts=["--checkpoints", *_ckpts, "--vae", VAE] if _ckpts else []   # tokens, each quoted
        log: f"{LOGS}/report/{_item}.log"
        localrule: not _ckpts   # Figure 7 samples images: a job with the sample resources
        resources: **resources("sample" if _ckpts else "default")
        conda: ENV
        shell: "variant report {params.profile:q} --only {params.item:q} --metrics {input.metrics:q} "
               "--profiling {input.profiling:q} --training-logs {input.logs:q} {params.ckpts:q} "
               "--tables-dir {params.out_dir:q} --figures-dir {params.out_dir:q} > {log:q} 2>&1"


rule paper_check:
    input: quality=dag.quality(P), profiling=dag.profiling(P)
    output: [report(f, **IN_REPORT["paper_check"]) if f.endswith(".html") else f for f in dag.paper_check(P)]
    params: profile=PROFILE_ARG, report_dir=lambda w, output: os.path.dirname(output[0])
    log: f"{LOGS}/report/paper_check.log"
    localrule: True
    conda: ENV
    shell: "variant report {params.profile:q} --only paper_check --quality {input.quality:q} "
           "--profiling {input.profiling:q} --report-dir {params.report_dir:q} > {log:q} 2>&1"


for _fig in dag.SAMPLE_GRIDS:
    rule:
        name: f"report_{_fig}"
        input: [dag.samples(P, run, cfg) for run, cfg, _ in dag.sample_grid(P, _fig)]
        output: [report(f, **IN_REPORT[_fig]) if f == SHOWN[_fig] else f for f in ITEM_FILES[_fig]]
        params: titles=[t for _, _, t in dag.sample_grid(P, _fig)],   # `:q` quotes each title
                stem=lambda w, output: os.path.splitext(output[0])[0]
        log: f"{LOGS}/report/{_fig}.log"
        localrule: True
        conda: ENV
        shell: "variant grid {input:q} --titles {params.titles:q} --out {params.stem:q} > {log:q} 2>&1"


rule findings:
    input: dag.quality(P)
    output: report(dag.findings(P), **IN_REPORT["findings"])
    params: profile=PROFILE_ARG, knobs=knobs("findings")
    log: f"{LOGS}/report/findings.log"
    localrule: True
    conda: ENV
    shell: "variant findings {params.profile:q} --quality {input:q} --out {output:q} > {log:q} 2>&1"


rule findings_table1:
    input: dag.metric_rows(P, dag.report_runs(P, "table1"))
    output: dag.table1_findings(P)
    params: profile=PROFILE_ARG, knobs=knobs("findings")
    log: f"{LOGS}/report/findings_table1.log"
    localrule: True
    conda: ENV
    shell: "variant findings {params.profile:q} --claims table1 --quality {input:q} --out {output:q} > {log:q} 2>&1"


REPORT_OUTPUTS = [f for files in ITEM_FILES.values() for f in files] + dag.paper_check(P) + [dag.findings(P)]


# `snakemake figures/pareto.pdf`: the active profile's figure under its short name. A copy:
# each profile keeps its own under results/<profile>/figures/, which `all` builds.
rule figure_by_name:
    input: lambda w: f"{dag.figures_dir(P)}/{w.item}.{w.ext}"
    output: "figures/{item}.{ext}"
    wildcard_constraints:
        item="|".join(item for item, (kind, _) in dag.REPORT_ITEMS.items() if kind == "figure") + "|"
             + "|".join(dag.SAMPLE_GRIDS),
        ext="pdf|png"
    log: f"{LOGS}/report/figure_by_name_{{item}}.{{ext}}.log"
    localrule: True
    conda: ENV
    shell: "cp {input:q} {output:q} 2> {log:q}"
