# Names and paths shared by the rules. Which runs and configurations the profile asks
# for is computed by variant.dag from params.yaml (P), the same code that writes dvc.yaml.
from variant import dag
from variant.config import config_hash
from variant import revisions

VAR = f"{A}/pretrained/var.pth"
VAE = f"{A}/pretrained/vae.pth"
TINY = P["data"]["source"] == "synthetic"
PY = "variant"   # every rule calls `variant <stage> --profile ...`
# Tokens, not a string: `{PROFILE_ARG:q}` quotes each. The same for every multi-token
# param below (a flag and its paths), so no value is ever split or expanded by the shell.
PROFILE_ARG = ["--profile", PROFILE]
PRETRAINED = f"{A}/pretrained"
TOKENS = f"{A}/tokens/train"


RUNS = dag.runs_and_configs(P)
TRAINED_RUNS = dag.trained_runs(P)


def knobs(*keys):
    """Hash of the params.yaml sections (dotted keys) a rule's command reads. Given as a
    rule param, so Snakemake reruns the job when one of them is edited."""
    def get(dotted):
        node = P
        for part in dotted.split("."):
            node = node[part]
        return node
    return config_hash({k: get(k) for k in keys})


def checkpoint(run):
    return dag.checkpoint(P, run)


def checkpoint_input(run):
    """What a rule depends on to read checkpoint(run): for a snapshot (run@e<epoch>) the
    train job's snapshot directory."""
    return dag.checkpoint_input(P, run)


REFERENCE_STATS = f"{A}/reference/stats.npz"


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


wildcard_constraints:
    run=r"pretrained|(progressive_d\d+|fixed_p[0-9.]+_d\d+)(@e\d+)?|skipall_d\d+",   # @e: a snapshot
    shard=r"\d{5}",
    config=r"full|d\d+_N\d+|d\d+_S[0-9-]+",
    split=r"train|eval",
