"""ADM's evaluation protocol: FID against the reference batch's stored mu/sigma (not its
images' own statistics), precision/recall against its images, the record says which; and
the evaluate row says what FID and the Inception Score's splits saw."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric

from variant.stages import reference
from variant.stages import sample as stage
from variant.util.hashing import sha256_file
from variant.cli import main
from variant.config import load_params
from variant.tiny.data import make_synthetic_dataset
from variant.tiny.extractor import train_feature_extractor
from variant.util.images import load_images
from variant.stages.evaluate import evaluate
from variant.metrics import (COMPUTED, STORED, compute_metrics, extract_features, feature_layer, fid_stats,
                             fid_to, image_set)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adm(tmp_path_factory):
    """A fake ADM reference batch: eval images as arr_0, and stored mu/sigma that are not
    theirs (shifted and scaled, as the whole training set's would differ from 80 images')."""
    root = tmp_path_factory.mktemp("adm")
    make_synthetic_dataset(root / "train", per_class=10, seed=0)
    make_synthetic_dataset(root / "eval", per_class=8, seed=1)
    train_feature_extractor(root / "train", root / "fe.pth", epochs=1)
    eval_images, _ = load_images(root / "eval")
    train_images, _ = load_images(root / "train")
    layer = feature_layer("variant-tiny", "fid")

    def feats(images):
        return extract_features(image_set(images), [layer], weights_path=root / "fe.pth", device="cpu")[layer]

    own = fid_stats(feats(eval_images))
    # float32, so the stage's cast to float64 is checked too
    mu, sigma = (own["mu"] + 0.3).astype(np.float32), (1.5 * own["sigma"]).astype(np.float32)
    batch = root / "VIRTUAL_fake.npz"
    np.savez(batch, arr_0=eval_images.permute(0, 2, 3, 1).numpy(), mu=mu, sigma=sigma)
    P = load_params(profile="tiny")                  # 10 classes x 10 samples
    gen = train_images                               # 100 stand-in samples, class-sorted
    return {"root": root, "batch": batch, "mu": mu, "sigma": sigma, "own": own, "P": P, "gen": gen,
            "gen_feats": feats(gen), "eval": eval_images}


def build(adm, ref, out):
    return reference.build(adm["P"], ref, out, adm["root"] / "fe.pth", device="cpu")


def test_fid_uses_the_reference_batch_mu_sigma(adm, tmp_path):
    stats_path = tmp_path / "stats.npz"
    assert main(["reference-stats", "--profile", "tiny", "--reference", str(adm["batch"]), "--weights",
                 str(adm["root"] / "fe.pth"), "--out", str(stats_path), "--device", "cpu"]) == 0
    meta = json.loads(stats_path.with_suffix(".json").read_text())
    assert meta["fid_statistics"] == STORED and meta["format"] == reference.FORMAT
    assert "carries mu/sigma" in meta["fid_statistics_why"] and meta["num_images"] == 80
    # the cross-check: the stored statistics against the images' own
    own_vs_stored = fid_statistics_to_metric({"mu": adm["mu"].astype(np.float64),
                                              "sigma": adm["sigma"].astype(np.float64)}, adm["own"],
                                             False)["frechet_inception_distance"]
    assert meta["fid_vs_batch_statistics"] == pytest.approx(own_vs_stored) and own_vs_stored > 1

    cached = reference.load(stats_path, "variant-tiny", adm["batch"], adm["root"] / "fe.pth")
    assert cached.fid_statistics == STORED and cached.mu.dtype == cached.sigma.dtype == np.float64
    assert np.array_equal(cached.mu, adm["mu"].astype(np.float64))
    m = compute_metrics(adm["gen"], cached, weights_path=adm["root"] / "fe.pth", device="cpu")
    stored = fid_to(adm["gen_feats"], adm["mu"], adm["sigma"])
    images_own = fid_to(adm["gen_feats"], adm["own"]["mu"], adm["own"]["sigma"])
    assert m["fid"] == pytest.approx(stored, rel=1e-12) and abs(stored - images_own) > 1
    assert m["fid_statistics"] == STORED
    # precision/recall read the batch's images either way
    from_images = compute_metrics(adm["gen"], adm["eval"], weights_path=adm["root"] / "fe.pth", device="cpu")
    assert from_images["fid"] == pytest.approx(images_own, rel=1e-12) and from_images["fid_statistics"] == COMPUTED
    assert (m["precision"], m["recall"]) == (from_images["precision"], from_images["recall"])


def test_a_batch_without_mu_sigma_or_of_another_dimension_computes_them(adm, tmp_path):
    arr_0 = adm["eval"].permute(0, 2, 3, 1).numpy()
    plain, wide = tmp_path / "plain.npz", tmp_path / "inception_dims.npz"
    np.savez(plain, arr_0=arr_0)
    np.savez(wide, arr_0=arr_0, mu=np.zeros(2048), sigma=np.eye(2048))   # Inception's, the tiny extractor is 128-d
    for ref, why in [(plain, "plain.npz has no mu/sigma"), (wide, r"\(2048,\)/\(2048, 2048\).* 128-d"),
                     (adm["root"] / "eval", "eval is a directory of images")]:
        meta = build(adm, ref, tmp_path / "stats.npz")
        assert meta["fid_statistics"] == COMPUTED and meta["fid_vs_batch_statistics"] is None
        assert re.search(why, meta["fid_statistics_why"]), meta
        cached = reference.load(tmp_path / "stats.npz", "variant-tiny", ref, adm["root"] / "fe.pth")
        assert cached.fid_statistics == COMPUTED
        assert np.allclose(cached.mu, adm["own"]["mu"]) and np.allclose(cached.sigma, adm["own"]["sigma"])


def test_bad_stored_statistics_and_old_caches_are_refused(adm, tmp_path):
    bad = tmp_path / "nan.npz"
    sigma = adm["sigma"].copy()
    sigma[0, 0] = np.nan
    np.savez(bad, arr_0=adm["eval"].permute(0, 2, 3, 1).numpy(), mu=adm["mu"], sigma=sigma)
    with pytest.raises(ValueError, match="nan.npz: its mu/sigma hold non-finite values"):
        build(adm, bad, tmp_path / "s.npz")
    build(adm, adm["batch"], tmp_path / "stats.npz")
    with np.load(tmp_path / "stats.npz") as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    np.savez(tmp_path / "old.npz", **dict(arrays, meta=np.array(json.dumps(dict(meta, format=1)))))
    with pytest.raises(ValueError, match="old.npz: a format 1 cache, this version reads format 2; rerun"):
        reference.load(tmp_path / "old.npz", "variant-tiny", weights=adm["root"] / "fe.pth")


def test_evaluate_rows_say_what_fid_and_is_saw(adm, tmp_path):
    """A file packed class-sorted (before the shuffle) scores as the shuffled file does:
    its IS splits see the pack order; FID, precision and recall do not depend on order."""
    root, P = adm["root"], adm["P"]
    torch.save({"w": torch.zeros(1)}, tmp_path / "ckpt.pth")
    build(adm, adm["batch"], tmp_path / "stats.npz")
    images, labels = adm["gen"].permute(0, 2, 3, 1).numpy(), stage.class_labels(10, 10)
    legacy, packed = tmp_path / "legacy.npz", tmp_path / "packed.npz"
    common = dict(checkpoint_sha256=np.array(sha256_file(tmp_path / "ckpt.pth")))
    np.savez(legacy, arr_0=images, labels=labels, **common)
    index = stage.pack_order(labels, stage.order_seed(P["sample"]["seed"]))
    stage.save_npz(packed, arr_0=images[index], labels=labels[index], sample_index=index, **common)
    rows = [evaluate(P, f, tmp_path / "stats.npz", "pretrained", "full", tmp_path / "ckpt.pth", weights=root / "fe.pth",
                     device="cpu", reference=adm["batch"]).loc[0] for f in (legacy, packed)]
    assert [r["fid_statistics"] for r in rows] == [STORED, STORED]
    assert rows[0]["isc_order"] == "class-sorted file, in the sample stage's pack order"
    assert rows[1]["isc_order"] == "file order"
    for key in ("fid", "isc_mean", "isc_std", "precision", "recall"):
        assert rows[0][key] == pytest.approx(rows[1][key], rel=1e-9, abs=1e-12), key
    assert rows[1]["fid"] == pytest.approx(fid_to(adm["gen_feats"], adm["mu"], adm["sigma"]), rel=1e-9)
    out = tmp_path / "row.parquet"                   # the CLI writes the same row
    assert main(["evaluate", "--profile", "tiny", "--samples", str(packed),
                 "--reference-stats", str(tmp_path / "stats.npz"), "--reference", str(adm["batch"]),
                 "--weights", str(root / "fe.pth"), "--run", "pretrained", "--config", "full",
                 "--checkpoint", str(tmp_path / "ckpt.pth"), "--out", str(out), "--device", "cpu"]) == 0
    row = pd.read_parquet(out).loc[0]
    assert (row["fid_statistics"], row["isc_order"], row["fid"]) == (STORED, "file order", rows[1]["fid"])
