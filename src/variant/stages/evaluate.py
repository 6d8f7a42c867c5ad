"""The evaluate stage: FID, IS, precision and recall of one configuration's samples,
written as one parquet row with its provenance; `collect` gathers the rows.

The reference side comes from `variant reference-stats` (computed once, checked here
against the reference input and the extractor weights); only the samples' features are
extracted per job. Each row records which statistics FID compared with (`fid_statistics`:
the reference batch's stored mu/sigma, ADM's way, or those computed from the reference
images) and the order the Inception Score's contiguous splits saw (`isc_order`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from variant import dag, names
from variant.config import load_params
from variant.metrics import compute_metrics
from variant.options import params_options
from variant.stages.reference import load as load_reference
from variant.stages.sample import order_seed, pack_order
from variant.util.atomic import write_parquet, write_text
from variant.util.devices import resolve_device
from variant.util.files import check_images, open_npz, require_file
from variant.util.hashing import sha256_cached
from variant.util.provenance import provenance


def evaluate(params: dict, samples, reference_stats, run: str, config: str, checkpoint,
             weights=None, device=None, reference=None) -> pd.DataFrame:
    """One metric row. `reference`, when given, is the input the statistics must have been
    computed from (their recorded sha256 is checked against it)."""
    samples = Path(samples)
    # everything that can be checked cheaply is, before any feature is extracted
    D, K = params["model"]["var"]["depth"], len(params["model"]["patch_nums"])
    subnet = names.subnet_of(config, D, K)
    r = names.parse_run(run)
    train_seed = None if r.kind == "pretrained" else (r.seed if r.seed is not None else params["train"]["seed"])
    require_file(samples, "--samples: the packed .npz of `variant sample`")
    checkpoint_sha = sha256_cached(require_file(checkpoint, "--checkpoint: the VAR the samples came from"))
    extractor = params["evaluate"]["extractor"]
    stats = load_reference(reference_stats, extractor, reference, weights)
    fix = "rerun `variant sample` for it"
    with open_npz(samples, "sample file", fix, required=["arr_0"]) as f:
        images = check_images(f["arr_0"], samples, "sample file", fix)
        expected = params["sample"]["per_class"] * params["data"]["num_classes"]
        if len(images) != expected:
            raise ValueError(f"{samples}: {len(images)} images, the profile asks for {expected}")
        if "checkpoint_sha256" in f and str(f["checkpoint_sha256"]) != checkpoint_sha:
            raise ValueError(f"{samples} was sampled from another checkpoint than {checkpoint}; resample it")
        labels = f["labels"] if "labels" in f else None
        shuffled = "sample_index" in f
    order, isc_order = None, "file order"
    if not shuffled and labels is not None and len(np.unique(labels)) > 1 and np.all(np.diff(labels) >= 0):
        # packed class-sorted (before the shuffle): contiguous IS splits would each see a few
        # classes, so they see the order the sample stage packs in now (FID and PRC ignore order)
        order = pack_order(labels, order_seed(params["sample"]["seed"]))
        isc_order = "class-sorted file, in the sample stage's pack order"
    device = resolve_device(device, params)
    m = compute_metrics(images, stats, extractor=extractor, weights_path=weights, device=device, isc_order=order,
                        bootstrap=int(params["evaluate"].get("bootstrap") or 0), seed=params["sample"]["seed"])
    row = {
        "run": run, "config": config, "train_seed": train_seed, "subnet_depth": subnet.subnet_depth,
        "bridge": subnet.bridge if subnet.subnet_scales is None else -1,
        "scales": "-".join(str(k + 1) for k in range(K) if subnet.in_subnet(k)) if not subnet.is_full else "",
        "fid": m["fid"], "fid_ci_low": m["fid_ci_low"], "fid_ci_high": m["fid_ci_high"],
        "bootstrap": m["bootstrap"], "isc_mean": m["isc_mean"], "isc_std": m["isc_std"],
        "precision": m["precision"], "recall": m["recall"], "num_samples": m["num_generated"],
        "extractor": m["extractor"], "extractor_weights": stats.weights, "fid_statistics": m["fid_statistics"],
        "isc_order": isc_order,
        **provenance(params, params["sample"]["seed"], device, checkpoint_sha),
    }
    return pd.DataFrame([row])


def collect(rows: list[str | Path], out, metrics_json=None) -> pd.DataFrame:
    """One table of every configuration; a configuration appears once. metrics_json: also
    the scores as `dvc metrics` reads them (metrics_record)."""
    df = pd.concat([pd.read_parquet(r) for r in rows], ignore_index=True)
    dup = df.duplicated(["run", "config"], keep=False)
    if dup.any():
        raise ValueError(f"duplicate rows for {df.loc[dup, ['run', 'config']].drop_duplicates().values.tolist()}")
    write_parquet(df.sort_values(["run", "config"]), out)
    if metrics_json is not None:
        write_text(metrics_json, json.dumps(metrics_record(df), indent=2, sort_keys=True) + "\n")
    return df


def metrics_record(quality: pd.DataFrame) -> dict:
    """{run: {configuration: {field: value}}} of dag.METRICS_JSON_FIELDS; a score that is
    not a number (NaN) is null, which JSON can hold."""
    out: dict = {}
    for row in quality.to_dict("records"):
        out.setdefault(row["run"], {})[row["config"]] = {
            k: None if pd.isna(row[k]) else float(row[k]) for k in dag.METRICS_JSON_FIELDS}
    return out


def add_parser(sub):
    p = sub.add_parser("evaluate")
    params_options(p, reads="`evaluate` holds the knobs")
    p.add_argument("--samples", required=True, help=".npz from `variant sample`")
    p.add_argument("--reference-stats", required=True, help="from `variant reference-stats`")
    p.add_argument("--reference", help="the reference input the statistics must match (checked by sha256)")
    p.add_argument("--weights", help="feature-extractor weights (tiny profile)")
    p.add_argument("--run", required=True, help="the run the samples came from, e.g. progressive_d16")
    p.add_argument("--config", required=True, help="their configuration: full | d<d>_N<N> | d<d>_S<k>-<k>...")
    p.add_argument("--checkpoint", required=True, help="the VAR checkpoint the samples came from")
    p.add_argument("--out", required=True, help="parquet file of the one metric row")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the profile's `device`)")
    p.set_defaults(func=_evaluate_main)

    p = sub.add_parser("collect")
    p.add_argument("rows", nargs="+", help="metric-row parquet files of `variant evaluate`")
    p.add_argument("--out", required=True, help="the gathered parquet (quality.parquet)")
    p.add_argument("--metrics-json", default=None,
                   help="also write the scores as JSON for `dvc metrics show`: {run: {config: {fid, ...}}}")
    p.set_defaults(func=_collect_main)


def _collect_main(a) -> int:
    for path in a.rows:
        require_file(path, "a metric row of `variant evaluate`")
    collect(a.rows, a.out, a.metrics_json)
    return 0


def _evaluate_main(a) -> int:
    params = load_params(a.params, a.profile)
    df = evaluate(params, a.samples, a.reference_stats, a.run, a.config, a.checkpoint, a.weights, a.device,
                  a.reference)
    write_parquet(df, a.out)
    print(df[["run", "config", "fid", "isc_mean", "precision", "recall"]].to_string(index=False))
    print(f"FID against: {df.loc[0, 'fid_statistics']}; IS splits: {df.loc[0, 'isc_order']}")
    return 0
