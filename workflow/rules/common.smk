# Names, paths and helpers shared by the rules. Which runs and configurations the profile
# asks for, where each file lives and which params each command reads come from
# variant.dag (P), the same code that writes dvc.yaml.
import os

from snakemake.exceptions import WorkflowError

from variant import dag, names, revisions
from variant.config import config_hash

VAR = dag.pretrained_var(P)
VAE = dag.pretrained_vae(P)
TINY = dag.is_tiny(P)
SHARED_BASE = dag.shares_base(P)
if SHARED_BASE:   # made by the base profile's run, which this one must not redo or clear
    _missing = [f for f in dag.shared_base_files(P) if not os.path.exists(f)]
    if _missing:
        raise WorkflowError(f"profile {PROFILE} uses profile {SHARED_BASE}'s data, feature extractor, "
                            f"reference statistics and VQVAE (params shares_base), and {', '.join(_missing)} "
                            f"{'is' if len(_missing) == 1 else 'are'} missing: make them first with "
                            f"`snakemake {' '.join(_missing)} --config profile={SHARED_BASE}`")
PY = "variant"   # every rule calls `variant <stage> --profile ...`
# Tokens, not a string: `{params.profile:q}` quotes each. The same for every multi-token
# param below (a flag and its paths), so no value is ever split or expanded by the shell.
PROFILE_ARG = ["--profile", PROFILE]
PRETRAINED = dag.pretrained_dir(P)
TOKENS = dag.tokens_dir(P)
REFERENCE_STATS = dag.reference_stats(P)
ENV = "../envs/variant.yaml"   # every rule's conda env (relative to this directory)

RUNS = dag.runs_and_configs(P)
TRAINED_RUNS = dag.trained_runs(P)


def knobs(*commands):
    """Hash of the params keys these `variant` commands read (variant.dag.STAGE_PARAMS).
    Given as a rule param, so Snakemake reruns the job when one of them is edited."""
    return config_hash({k: dag.lookup(P, k) for k in dag.stage_params(*commands)})


def checkpoint(run):
    return dag.checkpoint(P, run)


def checkpoint_input(run):
    """The input that holds checkpoint(run); for a snapshot (run@e<epoch>) the train job's
    snapshot directory."""
    return dag.checkpoint_input(P, run)


def resources(rule_name):
    """sbatch resources of a rule from params.yaml (default, overlaid by the rule's entry),
    in the SLURM plugin's names (gpu -> --gpus)."""
    r = dict(P["resources"]["default"]) | P["resources"].get(rule_name, {})
    out = {k: r[k] for k in ("cpus_per_task", "mem_mb", "runtime") if k in r}
    if r.get("gpus"):
        out["gpu"] = r["gpus"]
    if r.get("nodes"):
        out["nodes"] = r["nodes"]
    return out


def parent_dir(path):
    """A command's directory argument, from the file Snakemake tracks inside it."""
    return os.path.dirname(path)


def weights_arg(input):
    """`--weights PATH` as tokens (each quoted by `:q`), or none when the extractor ships
    its own weights."""
    return ["--weights", *input.extractor] if input.extractor else []


def launcher(wildcards, resources):
    """One process per GPU through torchrun wherever the job has GPUs (one GPU too: the
    launch line stays the paper's); plain on CPU. Left unquoted in the command on purpose:
    `$(command -v variant)` must expand (torchrun wants the script's path), and the string
    holds only constants and an int."""
    n = int(getattr(resources, "gpu", 0) or 0)
    if n < 1:
        return PY
    # torchrun passes SIGUSR1 (sbatch --signal) on to the workers, as it does SIGTERM, and
    # waits for their state save before killing them (its default: 30 s); torch versions
    # without these settings ignore them
    env = "PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 TORCH_ELASTIC_SHUTDOWN_TIMEOUT=600"
    return f"{env} torchrun --standalone --nproc-per-node={n} -- $(command -v {PY})"


def snapshot_epochs(wildcards):
    """The epochs after which the run keeps its weights too (Figures 2c and 7; variant.dag),
    as tokens for `{params.snapshots:q}`; none for most runs."""
    epochs = dag.snapshot_epochs(P, wildcards.run)
    return ["--snapshot-epochs", *map(str, epochs)] if epochs else []
