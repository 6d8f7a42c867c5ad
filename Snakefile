"""The VARiant pipeline as one DAG: fetch -> train -> sample -> evaluate -> profile -> report.

Every rule calls one `variant <stage>` command; params.yaml holds every knob, in
profiles. `snakemake -c2 all` runs the default `tiny` profile on a CPU;
`snakemake --profile slurm --config profile=paper data_root=/imagenet/train all` the paper.
"""
import os

from variant.config import load_params

if "data_root" in config:   # the paper's ImageNet path, passed on to every job
    os.environ["VARIANT_DATA_ROOT"] = str(config["data_root"])
P = load_params("params.yaml", config.get("profile"))
PROFILE = P["profile"]
A = f"artifacts/{PROFILE}"   # heavy intermediate files (DVC-tracked where worth keeping)
R = f"results/{PROFILE}"     # small results, kept in git
LOGS = f"logs/{PROFILE}"

include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_OUTPUTS,
