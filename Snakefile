"""The VARiant pipeline as one DAG: fetch -> train -> sample -> evaluate -> profile -> report.

Every rule calls one `variant <stage>` command; params.yaml holds every knob, in
profiles. `snakemake -c2 all` runs the default `tiny` profile on a CPU;
`snakemake --profile slurm --config profile=paper data_root=/imagenet/train all` the paper.

Shell commands quote every interpolated value (`{input:q}`, `{params.x:q}`, ...): paths
and --config values are data, never shell code, and a path may hold a space.
"""
from snakemake.utils import min_version, validate

from variant import dag, names
from variant.config import DATA_ROOT_ENV, export_data_root, load_params

min_version("9.0")
# A misspelt key (`--config profil=paper`) would otherwise run the default profile.
validate(config, "workflow/schemas/config.schema.json")

# Characters a shell still expands inside double quotes. Cluster executors re-send the
# --config values on each job's command line, and the SLURM plugin wraps that line in
# `sbatch --wrap="..."`, where the single quotes Snakemake puts around them do not hold.
UNSAFE_FOR_CLUSTER = set('$`\\\n')

if "data_root" in config:   # the paper's ImageNet path, passed on to every job
    # Jobs read it from the environment (variant.config), not from their command line;
    # the one rule that passes it on (tokenize) quotes it.
    export_data_root(config["data_root"])

    envvars:
        DATA_ROOT_ENV,

P = load_params("params.yaml", config.get("profile"))
PROFILE = P["profile"]
A = dag.artifacts_dir(P)   # heavy intermediate files (DVC-tracked where worth keeping)
R = dag.results_dir(P)     # small results, kept in git
LOGS = dag.logs_dir(P)

# Run and configuration names as variant.names parses them; a trained run may be a snapshot.
wildcard_constraints:
    **names.WILDCARDS,

include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/report.smk"


onstart:
    # Runs before the first job (not in dry runs): refuse what only quoting by Snakemake
    # itself would have to protect, i.e. a --config value bound for a cluster command line.
    if workflow.non_local_exec:
        for key, value in config.items():
            bad = sorted(UNSAFE_FOR_CLUSTER & set(str(value)))
            if bad:
                raise ValueError(f"--config {key}={value!r} holds {' '.join(map(repr, bad))}, which the "
                                 f"cluster executor's sbatch command line would let a shell expand; "
                                 f"rename the path (or use a symlink without them)")


rule all:
    input:
        REPORT_OUTPUTS,
