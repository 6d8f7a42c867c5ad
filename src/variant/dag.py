"""The pipeline's facts, derived from params.yaml alone: which runs and configurations
each table and figure reads, where every artifact lives, and which params keys each
stage reads (STAGE_PARAMS).

The Snakefile builds its DAG from these functions and dvc.yaml is generated from them,
so the two can never disagree about which jobs a table needs, where a file is, or which
params edit makes a job stale. Paths take wildcard strings too: `metric_row(P, "{run}",
"{config}")` is the rule's output pattern.
"""
from __future__ import annotations

from variant import names
from variant.config import phases_of

# ---- the params each stage reads ----------------------------------------------------------------
# {CLI command: dotted params keys it reads}; a key covers everything below it. `variant
# <command>` may read nothing else (variant.config.reading_for enforces it), Snakemake
# reruns a job when one of its keys changes, and DVC marks the stage stale. Facts every
# stage may read (ALWAYS_ALLOWED) are not listed.
ALWAYS_ALLOWED = ("profile", "config_hash", "device", "shares_base")   # shares_base: where files are
SAMPLE_KEYS = ["sample.per_class", "sample.cfg", "sample.top_k", "sample.top_p", "sample.batch_size",
               "sample.shard_size", "sample.seed"]   # decide the pixels
STAGE_PARAMS: dict[str, list[str]] = {
    "make-data": ["data"],
    "fetch": ["data", "model", "fetch"],
    "check-base": ["data.source"],
    "train-extractor": ["data.seed", "evaluate.extractor", "fetch.feature_extractor"],
    "tokenize": ["data.image_size", "data.seed", "model.patch_nums", "train.augment", "train.phases"],
    "train": ["train.optimizer", "train.batch_size", "train.micro_batch", "train.precision", "train.compile", "train.drop_path",
              "train.augment", "train.seed", "train.checkpoint_every", "train.phases", "train.bridge"],
    "sample": ["model", "data.num_classes", *SAMPLE_KEYS],
    "reference-stats": ["evaluate.extractor"],
    "evaluate": ["model.var.depth", "model.patch_nums", "data.num_classes", "sample.per_class", "sample.seed",
                 "evaluate.extractor", "evaluate.bootstrap", "train.seed"],
    "collect": [],
    "profile": ["model.var.depth", "model.patch_nums", "profiling", "train.subnet_depths", "train.bridge",
                "sample.bridges", "sample.cfg", "sample.top_k", "sample.top_p", "sample.seed"],
    # the tables' layout (the DAG's runs), Table 3's cost model, Figure 7's sampling
    "report": ["model", "data.num_classes", "train.subnet_depths", "train.bridge", "train.fixed_ratios",
               "train.skip_all_depths", "train.replica_seeds", "train.phases", "sample", "profiling.batches",
               "profiling.memory_cap_gib"],
    "grid": [],   # Figures 4 and 6 from packed samples alone
    "findings": ["model.var.depth", "model.patch_nums", "train.subnet_depths", "train.bridge",
                 "train.fixed_ratios", "train.seed", "train.replica_seeds", "sample.bridges", "sample.table1_depth"],
}
# Report keys whose values only some items' outputs depend on (the report command reads
# them all to lay out the DAG); DVC declares them on those items alone, so editing Figure 2's
# ratios leaves Table 2 up to date.
REPORT_KEYS_OF_ITEMS = {"train.fixed_ratios": ("pareto", "fig2b_losses", "fig2c_ratios"),
                        "train.skip_all_depths": ("table5",),
                        "train.replica_seeds": ()}   # the findings' replicas: in no report item


def report_item_params(item: str) -> list[str]:
    """The params keys one report item's files depend on."""
    return [k for k in STAGE_PARAMS["report"] if item in REPORT_KEYS_OF_ITEMS.get(k, (item,))]


SAMPLE_KNOBS = tuple(k.removeprefix("sample.") for k in SAMPLE_KEYS)   # a shard's key hashes these


def stage_params(*stages: str) -> list[str]:
    """The keys a job reads that runs these commands (e.g. sample then evaluate), in order."""
    return list(dict.fromkeys(k for s in stages for k in STAGE_PARAMS[s]))


def lookup(P: dict, dotted: str, default=None):
    """params value at a dotted key; `default` where the profile leaves an optional key out."""
    node = P
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# ---- the model and the grid ---------------------------------------------------------------------

def depth(P: dict) -> int:
    return P["model"]["var"]["depth"]


def num_scales(P: dict) -> int:
    return len(P["model"]["patch_nums"])


def shard_layout(P: dict) -> tuple[int, int]:
    """(images per shard, shards) of one configuration: per_class x num_classes images in
    shards of sample.shard_size (null: one shard). Each shard is one sampling job."""
    n = P["sample"]["per_class"] * P["data"]["num_classes"]
    size = min(P["sample"]["shard_size"] or n, n)
    return size, -(-n // size)


def keep_samples(P: dict) -> bool:
    """Whether a configuration's packed samples outlive their scoring (params
    sample.keep_samples; 9.8 GB a configuration at 50,000 images of 256 px)."""
    return P["sample"].get("keep_samples", True)


def shard_ids(P: dict) -> list[str]:
    """The shard wildcard's values (names.WILDCARDS["shard"]: five digits)."""
    return [f"{s:05d}" for s in range(shard_layout(P)[1])]


def grid_config(P: dict, d: int, n: int) -> str:
    """Configuration of subnet d with bridge N; N = K runs every scale at full depth."""
    return names.grid_config(d, n, num_scales(P))


def table1_configs(P: dict) -> list[str]:
    """Table 1: the subnet on early (r1-r3), middle (r4-r6) or late (r7-rK) scales."""
    d, K = P["sample"]["table1_depth"], num_scales(P)
    return [names.on_scales(d, g) for g in ([1, 2, 3], [4, 5, 6], list(range(7, K + 1)))]


fixed_ratio_run = names.fixed_ratio
snapshot_run = names.snapshot


def fig7_depth(P: dict) -> int:
    """Figure 7's subnet: the deepest one (the paper's d = 16)."""
    return max(P["train"]["subnet_depths"])


def snapshot_epochs(P: dict, run: str) -> list[int]:
    """Epochs (the paper's 1-based count: the weights after that many epochs) at which a
    trained run also keeps its weights: each fixed ratio at the end of phase 1 (Figure 2c:
    the paper's epoch 5 of 25), and the Figure 7 progressive run at the end of phases 1
    and 2 (its final checkpoint ends phase 3). Derived from train.phases."""
    T = P["train"]
    fd = T["fixed_ratios"]["depth"]
    if run in {names.fixed_ratio(p, fd) for p in T["fixed_ratios"]["p"]}:
        e1, e2, e3 = phases_of(P, fd)
        epochs = [e1]
    elif run == names.progressive(fig7_depth(P)):
        e1, e2, e3 = phases_of(P, fig7_depth(P))
        epochs = [e1, e1 + e2]
    else:
        return []
    return sorted({e for e in epochs if 0 < e < e1 + e2 + e3})


def fig2c_epoch(P: dict) -> int:
    """Figure 2c's early epoch: the end of phase 1 of the fixed ratios' schedule."""
    return phases_of(P, P["train"]["fixed_ratios"]["depth"])[0]


def fig7_runs(P: dict) -> list[tuple[str, str]]:
    """Figure 7's columns: (title, run) at the end of each phase of the deepest progressive
    run; the last is the final checkpoint (a zero-length phase has no column of its own)."""
    d = fig7_depth(P)
    run, (e1, e2, e3) = names.progressive(d), phases_of(P, d)
    kept = snapshot_epochs(P, run)
    return [(f"Phase {i} end (epoch {e})", names.snapshot(run, e) if i < 3 else run)
            for i, e in enumerate((e1, e1 + e2, e1 + e2 + e3), 1) if e in kept or i == 3]


# ---- which quality rows each table and figure reads ---------------------------------------------

def table_runs(P: dict) -> dict[str, dict[str, list[str]]]:
    """{table or figure: {run: [configuration, ...]}}: the quality rows each one reads."""
    T, S = P["train"], P["sample"]
    bridge, depths = T["bridge"], T["subnet_depths"]
    fd = T["fixed_ratios"]["depth"]
    progressive_at_bridge = {names.progressive(d): [names.FULL, grid_config(P, d, bridge)] for d in depths}
    fixed = {names.fixed_ratio(p, fd): [names.FULL, grid_config(P, fd, bridge)] for p in T["fixed_ratios"]["p"]}
    early = fig2c_epoch(P)
    grid = {names.progressive(d): [names.FULL] + [grid_config(P, d, n) for n in S["bridges"]] for d in depths}
    tables = {
        "table1": {names.PRETRAINED: [names.FULL] + table1_configs(P)},
        "table2": {names.PRETRAINED: [names.FULL], **progressive_at_bridge},
        "table3": {},
        "table4": {names.PRETRAINED: [names.FULL] + [grid_config(P, d, bridge) for d in depths],
                   **progressive_at_bridge},
        "table5": {names.skip_all(d): [names.FULL, names.zones(d, 0)] for d in T["skip_all_depths"]}
                  | {names.progressive(d): [names.FULL, grid_config(P, d, bridge)]
                     for d in T["skip_all_depths"] if d in depths},
        "table7": {},
        "table8": grid,   # its full-depth row is the supernet's full network, as in the paper
        "pareto": fixed | ({names.progressive(fd): [names.FULL, grid_config(P, fd, bridge)]} if fd in depths else {}),
        "fig5": grid,
        "fig2c_ratios": fixed | {names.snapshot(r, early): cfgs for r, cfgs in fixed.items()
                                 if early in snapshot_epochs(P, r)},
    }
    # `variant findings`: the claims' trainings again with each of train.replica_seeds
    claimed: dict[str, list[str]] = {}
    for t in CLAIM_TABLES:
        for run, cfgs in tables[t].items():
            if run != names.PRETRAINED:
                claimed.setdefault(run, []).extend(cfgs)
    tables["findings"] = {r: cfgs for run, cfgs in claimed.items() for r in seed_replicas(P, run)}
    # N = K is the full network, so a grid can name `full` twice
    return {t: {run: list(dict.fromkeys(cfgs)) for run, cfgs in runs.items()} for t, runs in tables.items()}


# The tables whose trainings a claim of `variant findings` compares (Table 1 compares
# configurations of the pre-trained model only).
CLAIM_TABLES = ("pareto", "table5", "table8")


def seed_replicas(P: dict, run: str) -> list[str]:
    """The training `run` with each of train.replica_seeds (none by default)."""
    return [names.with_seed(run, s) for s in P["train"].get("replica_seeds", [])]


# Outputs of `variant report --only ITEM`: name -> (kind, what it reads besides metric rows).
REPORT_ITEMS = {
    "table1": ("table", ()), "table2": ("table", ("profiling",)), "table3": ("table", ("profiling",)),
    "table4": ("table", ()), "table5": ("table", ()), "table7": ("table", ()), "table8": ("table", ()),
    "pareto": ("figure", ()), "fig2b_losses": ("figure", ("logs",)), "fig3a_schedule": ("figure", ("logs",)),
    "fig5_depth": ("figure", ("profiling",)), "fig5_bridge": ("figure", ("profiling",)),
    "fig5_space": ("figure", ("profiling",)),
    "fig2c_ratios": ("figure", ()), "fig7_evolution": ("figure", ("checkpoints",)),
}
# Figures 4 and 6, drawn by `variant grid` from packed samples: across depths at N =
# bridge, and across N at the deepest subnet, from the progressive supernets.
SAMPLE_GRIDS = ("fig4_samples", "fig6_samples")


def report_runs(P: dict, item: str) -> dict[str, list[str]]:
    """The quality rows one table or figure reads."""
    runs = table_runs(P)
    return runs["fig5"] if item.startswith("fig5") else runs.get(item, {})


def report_logs(P: dict, item: str) -> list[str]:
    """The training runs whose logs a figure reads: Figure 2b the fixed ratios, 3a the
    progressive schedule."""
    if item == "fig2b_losses":
        fd = P["train"]["fixed_ratios"]["depth"]
        return [names.fixed_ratio(p, fd) for p in P["train"]["fixed_ratios"]["p"]]
    if item == "fig3a_schedule":
        return [names.progressive(d) for d in P["train"]["subnet_depths"]]
    return []


def sample_grid(P: dict, item: str) -> list[tuple[str, str, str]]:
    """(run, configuration, row title) of each row of Figure 4 or 6 (SAMPLE_GRIDS)."""
    T, S = P["train"], P["sample"]
    if item == "fig4_samples":
        return [(names.PRETRAINED, names.FULL, f"VAR-d{depth(P)}")] + [
            (names.progressive(d), grid_config(P, d, T["bridge"]), f"d{d}")
            for d in sorted(T["subnet_depths"], reverse=True)]
    if item == "fig6_samples":
        d = max(T["subnet_depths"])
        return [(names.progressive(d), grid_config(P, d, n), f"d{d} N={n}") for n in sorted(S["bridges"], reverse=True)]
    raise ValueError(f"{item!r} is not a sample grid ({', '.join(SAMPLE_GRIDS)})")


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
    runs = [names.progressive(d) for d in T["subnet_depths"]]
    runs += [names.fixed_ratio(p, T["fixed_ratios"]["depth"]) for p in T["fixed_ratios"]["p"]]
    runs += [names.skip_all(d) for d in T["skip_all_depths"]]
    return runs + list(table_runs(P)["findings"])


# ---- where every artifact lives -----------------------------------------------------------------
# artifacts/<profile>: heavy intermediates (DVC-cached where worth keeping);
# results/<profile>: small results kept in git; logs/<profile>: job logs.

def artifacts_dir(P: dict) -> str:
    return f"artifacts/{P['profile']}"


# A profile with params `shares_base: B` (the depth arm of Table 1) uses B's generated data,
# feature extractor, reference statistics and VQVAE, made by B's own run, so its FIDs are
# measured as B's are; config.load_params checks that these keys, which decide those
# files, are equal in both.
SHARED_BASE_KEYS = ("data", "model.patch_nums", "model.vae", "fetch.vae", "fetch.seed",
                    "fetch.feature_extractor", "evaluate.extractor")


def shares_base(P: dict) -> str | None:
    return P.get("shares_base")


def base_dir(P: dict) -> str:
    """artifacts/ of the profile that makes the shared files (this one, or shares_base)."""
    return f"artifacts/{shares_base(P) or P['profile']}"


def shared_base_files(P: dict) -> list[str]:
    """What a profile with shares_base reads from its base profile's run."""
    return [data_dir(P, "train"), data_dir(P, "eval"), feature_extractor(P), pretrained_vae(P),
            reference_stats(P), reference_record(P)]


def results_dir(P: dict) -> str:
    return f"results/{P['profile']}"


def logs_dir(P: dict) -> str:
    return f"logs/{P['profile']}"


def is_tiny(P: dict) -> bool:
    """The profile generates its data and pre-trains its models (nothing is downloaded)."""
    return P["data"]["source"] == "synthetic"


def data_dir(P: dict, split: str) -> str:
    return f"{base_dir(P)}/data/{split}"


def feature_extractor(P: dict) -> str:
    return f"{base_dir(P)}/feature_extractor.pth"


def pretrained_dir(P: dict) -> str:
    return f"{artifacts_dir(P)}/pretrained"


def pretrained_var(P: dict) -> str:
    return f"{pretrained_dir(P)}/var.pth"


def pretrained_vae(P: dict) -> str:
    return f"{base_dir(P)}/pretrained/vae.pth"


def fetch_record(P: dict) -> str:
    """fetch.json: what the fetch job downloaded or pre-trained, with sha256."""
    return f"{pretrained_dir(P)}/fetch.json"


def base_record(P: dict) -> str:
    """The committed copy of a synthetic profile's fetch.json: the base its rows were made on."""
    return f"{results_dir(P)}/fetch.json"


def reference_batch(P: dict) -> str:
    """The paper's ADM reference batch, downloaded next to the weights."""
    return f"{pretrained_dir(P)}/{P['fetch']['reference_batch']}"


def reference_input(P: dict) -> str:
    """What FID's reference statistics are computed from: the generated eval split (tiny),
    else evaluate.reference or the downloaded reference batch."""
    if is_tiny(P):
        return data_dir(P, "eval")
    return P["evaluate"]["reference"] or reference_batch(P)


def tokens_dir(P: dict) -> str:
    return f"{artifacts_dir(P)}/tokens/train"


def tokens_index(P: dict) -> str:
    return f"{tokens_dir(P)}/index.json"


def checkpoint(P: dict, run: str) -> str:
    """The VAR weights a run samples from: pretrained, a trained run's final checkpoint, or
    (run@e<epoch>) the snapshot its train job kept after that epoch."""
    r = names.parse_run(run) if "{" not in run else None   # a wildcard pattern is a final run
    if r is not None and r.epoch is not None:
        return f"{snapshot_dir(P, r.base)}/e{r.epoch}.pth"
    return pretrained_var(P) if run == names.PRETRAINED else f"{artifacts_dir(P)}/checkpoints/{run}.pth"


def snapshot_dir(P: dict, run: str) -> str:
    """Where a trained run's train job keeps its snapshots (e<epoch>.pth; a rule output)."""
    return f"{artifacts_dir(P)}/snapshots/{run}"


def checkpoint_input(P: dict, run: str) -> str:
    """The file or (for a snapshot) the directory a rule depends on to read checkpoint(run)."""
    r = names.parse_run(run)
    return snapshot_dir(P, r.base) if r.epoch is not None else checkpoint(P, run)


def train_log(P: dict, run: str) -> str:
    """A training's per-step log (Figures 2b and 3a read it)."""
    return f"{results_dir(P)}/train/{run}.parquet"


def train_state(P: dict, run: str) -> str:
    """Where a train job keeps its resumable state."""
    return f"{artifacts_dir(P)}/train/{run}/state"


def samples(P: dict, run: str, config: str) -> str:
    """The packed samples of one (run, configuration)."""
    return f"{artifacts_dir(P)}/samples/{run}/{config}.npz"


def sample_shard(P: dict, run: str, config: str, shard: str) -> str:
    return f"{artifacts_dir(P)}/samples/{run}/{config}/shard-{shard}.npz"


def reference_stats(P: dict) -> str:
    return f"{base_dir(P)}/reference/stats.npz"


def reference_record(P: dict) -> str:
    return f"{base_dir(P)}/reference/stats.json"


def metric_row(P: dict, run: str, config: str) -> str:
    """FID / IS / precision / recall of one (run, configuration)."""
    return f"{results_dir(P)}/metrics/{run}/{config}.parquet"


def metric_rows(P: dict, runs: dict[str, list[str]]) -> list[str]:
    return [metric_row(P, run, cfg) for run, cfgs in runs.items() for cfg in cfgs]


def quality(P: dict) -> str:
    """Every metric row in one parquet (`variant collect`)."""
    return f"{results_dir(P)}/quality.parquet"


# `variant collect --metrics-json` writes this beside quality.parquet, for `dvc metrics`:
# {run: {configuration: {field: value}}} with these fields of each metric row.
METRICS_JSON_FIELDS = ("fid", "isc_mean", "precision", "recall")


def metrics_json(P: dict) -> str:
    return f"{results_dir(P)}/metrics.json"


def profiling(P: dict) -> str:
    return f"{results_dir(P)}/profiling.parquet"


def tables_dir(P: dict) -> str:
    return f"{results_dir(P)}/tables"


def figures_dir(P: dict) -> str:
    """Per profile, so one profile's report never overwrites another's figures."""
    return f"{results_dir(P)}/figures"


def report_outputs(P: dict, item: str) -> list[str]:
    """A table's CSV, Markdown and LaTeX, or a figure's PDF and PNG."""
    if REPORT_ITEMS.get(item, ("figure",))[0] == "table":
        return [f"{tables_dir(P)}/{item}.{ext}" for ext in ("csv", "md", "tex")]
    return [f"{figures_dir(P)}/{item}.{ext}" for ext in ("pdf", "png")]


def figure_data(P: dict, item: str) -> str:
    """The frame a figure plots, as CSV beside it (what `dvc plots` reads)."""
    return f"{figures_dir(P)}/{item}.csv"


def paper_check(P: dict) -> list[str]:
    return [f"{results_dir(P)}/paper_check.md", f"{results_dir(P)}/paper_check.html"]


def findings(P: dict) -> str:
    """The paper's behavioural claims judged on this profile's rows (`variant findings`)."""
    return f"{results_dir(P)}/findings.md"


def table1_findings(P: dict) -> str:
    """Table 1's claim alone, from the pre-trained model's rows: all that a profile run for
    Table 1 only (small_hard_d24, the depth arm) can judge."""
    return f"{results_dir(P)}/findings_table1.md"


# `dvc plots`: {file: (x, y)} of CSVs the report writes. Figure frames are long (one row
# a point); Table 8 is the d x N grid of FID, one column per N.
def plots(P: dict) -> dict[str, tuple[str, str | list[str]]]:
    K = num_scales(P)
    bridges = [n for n in P["sample"]["bridges"]]
    return {
        figure_data(P, "fig2b_losses"): ("epoch", "loss"),
        figure_data(P, "pareto"): ("full_fid", "subnet_fid"),
        figure_data(P, "fig5_depth"): ("d", "fid"),
        figure_data(P, "fig5_bridge"): ("N", "fid"),
        f"{tables_dir(P)}/table8.csv": ("d", [f"N={n}" for n in bridges if n <= K]),
    }
