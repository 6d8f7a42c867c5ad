"""The evaluate stage: FID, IS, precision and recall of one configuration's samples,
written as one parquet row with its provenance; `collect` gathers the rows.

The reference side comes from `variant reference-stats` (computed once, checked here
against the reference input and the extractor weights); only the samples' features are
extracted per job. Each row records which statistics FID compared with (`fid_statistics`:
the reference batch's stored mu/sigma, ADM's way, or those computed from the reference
images) and the order the Inception Score's contiguous splits saw (`isc_order`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from variant.models.checkpoint import sha256_file
from variant.config import load_params
from variant.util.files import check_images, open_npz
from variant.metrics import compute_metrics
from variant.util.provenance import provenance, write_parquet
from variant.stages.reference import load as load_reference
from variant.stages.sample import order_seed, pack_order, parse_config


def evaluate(params: dict, samples, reference_stats, run: str, config: str, checkpoint,
             weights=None, device=None, reference=None) -> pd.DataFrame:
    """One metric row. `reference`, when given, is the input the statistics must have been
    computed from (their recorded sha256 is checked against it)."""
    samples = Path(samples)
    # everything that can be checked cheaply is, before any feature is extracted
    D, K = params["model"]["var"]["depth"], len(params["model"]["patch_nums"])
    subnet = parse_config(config, D, K)
    if not samples.is_file():
        raise FileNotFoundError(f"samples not found: {samples}")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint (--checkpoint: the VAR the samples came from)")
    checkpoint_sha = sha256_file(checkpoint)
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
    device = device or params["device"]
    m = compute_metrics(images, stats, extractor=extractor, weights_path=weights, device=device, isc_order=order,
                        bootstrap=int(params["evaluate"].get("bootstrap") or 0), seed=params["sample"]["seed"])
    row = {
        "run": run, "config": config, "subnet_depth": subnet.subnet_depth,
        "bridge": subnet.bridge if subnet.subnet_scales is None else -1,
        "scales": "-".join(str(k + 1) for k in range(K) if subnet.in_subnet(k)) if not subnet.is_full else "",
        "fid": m["fid"], "fid_ci_low": m["fid_ci_low"], "fid_ci_high": m["fid_ci_high"],
        "bootstrap": m["bootstrap"], "isc_mean": m["isc_mean"], "isc_std": m["isc_std"],
        "precision": m["precision"], "recall": m["recall"], "num_samples": m["num_generated"],
        "extractor": m["extractor"], "fid_statistics": m["fid_statistics"], "isc_order": isc_order,
        **provenance(params, params["sample"]["seed"], device, checkpoint_sha),
    }
    return pd.DataFrame([row])


def collect(rows: list[str | Path], out) -> pd.DataFrame:
    """One table of every configuration; a configuration appears once."""
    df = pd.concat([pd.read_parquet(r) for r in rows], ignore_index=True)
    dup = df.duplicated(["run", "config"], keep=False)
    if dup.any():
        raise ValueError(f"duplicate rows for {df.loc[dup, ['run', 'config']].drop_duplicates().values.tolist()}")
    write_parquet(df.sort_values(["run", "config"]), out)
    return df


def add_parser(sub):
    p = sub.add_parser("evaluate", help="FID/IS/precision/recall of one configuration's samples")
    p.add_argument("--profile")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--samples", required=True, help=".npz from `variant sample`")
    p.add_argument("--reference-stats", required=True, help="from `variant reference-stats`")
    p.add_argument("--reference", help="the reference input the statistics must match (checked by sha256)")
    p.add_argument("--weights", help="feature-extractor weights (tiny profile)")
    p.add_argument("--run", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True, help="the VAR checkpoint the samples came from")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.set_defaults(func=_evaluate_main)

    p = sub.add_parser("collect", help="gather per-configuration metric rows into one parquet")
    p.add_argument("rows", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=lambda a: collect(a.rows, a.out) is not None and 0)


def _evaluate_main(a) -> int:
    params = load_params(a.params, a.profile)
    df = evaluate(params, a.samples, a.reference_stats, a.run, a.config, a.checkpoint, a.weights, a.device,
                  a.reference)
    write_parquet(df, a.out)
    print(df[["run", "config", "fid", "isc_mean", "precision", "recall"]].to_string(index=False))
    print(f"FID against: {df.loc[0, 'fid_statistics']}; IS splits: {df.loc[0, 'isc_order']}")
    return 0
