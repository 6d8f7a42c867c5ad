"""Reference statistics computed once (variant reference-stats), read by every evaluate job,
refused when they do not match; and the evaluate stage's errors name the file."""
import json
import shutil

import numpy as np
import pytest
import torch

from variant.stages import reference
from variant.util.hashing import sha256_file
from variant.util.provenance import device_name
from variant.cli import main
from variant.config import load_params
from variant.tiny.data import make_synthetic_dataset
from variant.tiny.extractor import train_feature_extractor
from variant.stages.evaluate import evaluate
from variant.metrics import ReferenceStats, compute_metrics
from variant.util.images import load_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Synthetic train/eval splits, a one-epoch extractor, the eval split's statistics (CLI)."""
    root = tmp_path_factory.mktemp("ref")
    make_synthetic_dataset(root / "train", per_class=10, seed=0)
    make_synthetic_dataset(root / "eval", per_class=8, seed=1)
    train_feature_extractor(root / "train", root / "fe.pth", epochs=1)
    assert main(["reference-stats", "--profile", "tiny", "--reference", str(root / "eval"), "--weights",
                 str(root / "fe.pth"), "--out", str(root / "ref" / "stats.npz"), "--device", "cpu"]) == 0
    P = load_params(profile="tiny", overrides={"data.num_classes": 10, "sample.per_class": 5})
    images, _ = load_images(root / "train")
    samples = root / "samples.npz"   # 50 stand-in "samples": train images, in the sample stage's format
    torch.save({"w": torch.zeros(1)}, root / "ckpt.pth")
    np.savez(samples, arr_0=images[::2].permute(0, 2, 3, 1).numpy(), labels=np.repeat(np.arange(10), 5),
             checkpoint_sha256=np.array(sha256_file(root / "ckpt.pth")))
    return {"root": root, "stats": root / "ref" / "stats.npz", "P": P, "samples": samples}


def test_cache_records_its_inputs_and_equals_recomputing(ref):
    root = ref["root"]
    meta = json.loads((root / "ref" / "stats.json").read_text())
    assert meta["reference_sha256"] == reference.input_sha256(root / "eval")
    assert meta["weights_sha256"] == sha256_file(root / "fe.pth")
    assert meta["num_images"] == 80 and meta["image_size"] == [32, 32] and meta["extractor"] == "variant-tiny"
    with np.load(ref["stats"]) as f:
        assert json.loads(str(f["meta"])) == meta and f["features"].shape == (80, meta["feature_dim"])
    cached = reference.load(ref["stats"], "variant-tiny", root / "eval", root / "fe.pth")
    samples = np.load(ref["samples"])["arr_0"]
    a = compute_metrics(samples, cached, weights_path=root / "fe.pth", device="cpu")
    b = compute_metrics(samples, root / "eval", weights_path=root / "fe.pth", device="cpu")
    assert a == b                                  # exactly: the same torch-fidelity features and functions


def test_evaluate_reads_the_cache_not_the_reference(ref, monkeypatch):
    root = ref["root"]
    monkeypatch.setattr(ReferenceStats, "compute", lambda *a, **k: pytest.fail("reference features recomputed"))
    row = evaluate(ref["P"], ref["samples"], ref["stats"], "progressive_d2_s4", "full", root / "ckpt.pth",
                   weights=root / "fe.pth", device="cpu", reference=root / "eval")
    assert row.loc[0, "num_samples"] == 50 and row.loc[0, "fid"] >= 0
    assert row.loc[0, "device"] == device_name("cpu")
    assert row.loc[0, "train_seed"] == 4        # a seed replica's own seed, read off its name


def test_collect_gathers_rows_and_writes_the_dvc_metrics(ref, tmp_path):
    from variant.stages.evaluate import collect
    root = ref["root"]
    row = evaluate(ref["P"], ref["samples"], ref["stats"], "pretrained", "full", root / "ckpt.pth",
                   weights=root / "fe.pth", device="cpu")
    assert row.loc[0, "train_seed"] is None     # the pre-trained weights: no training seed
    paths = []
    for config, fid in (("full", row.loc[0, "fid"]), ("d2_N2", float("nan"))):
        paths.append(tmp_path / f"{config}.parquet")
        row.assign(config=config, fid=fid).to_parquet(paths[-1])
    collect(paths, tmp_path / "quality.parquet", tmp_path / "metrics.json")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["pretrained"] and sorted(metrics["pretrained"]) == ["d2_N2", "full"]
    assert metrics["pretrained"]["full"]["fid"] == row.loc[0, "fid"] and metrics["pretrained"]["d2_N2"]["fid"] is None
    assert set(metrics["pretrained"]["full"]) == {"fid", "isc_mean", "precision", "recall"}
    with pytest.raises(ValueError, match="duplicate rows for .*pretrained"):
        collect([paths[0], paths[0]], tmp_path / "q2.parquet")


def test_a_cache_that_does_not_match_is_refused(ref, tmp_path):
    root, P, stats = ref["root"], ref["P"], ref["stats"]
    args = dict(run="pretrained", config="full", checkpoint=root / "ckpt.pth", device="cpu")
    changed = shutil.copytree(root / "eval", tmp_path / "eval")
    png = sorted(changed.rglob("*.png"))[3]
    shutil.copy(sorted(changed.rglob("*.png"))[4], png)     # one reference image edited
    with pytest.raises(ValueError, match=r"stats.npz: computed from reference sha256 .* but .*eval is"):
        evaluate(P, ref["samples"], stats, weights=root / "fe.pth", reference=changed, **args)
    train_feature_extractor(root / "train", tmp_path / "fe2.pth", epochs=1, seed=1)
    with pytest.raises(ValueError, match="stats.npz: computed with extractor weights sha256 .* but .*fe2.pth"):
        evaluate(P, ref["samples"], stats, weights=tmp_path / "fe2.pth", **args)
    inception = dict(P, evaluate={"extractor": "inception-v3-compat"})
    with pytest.raises(ValueError, match="computed with extractor 'variant-tiny'.*inception-v3-compat"):
        evaluate(inception, ref["samples"], stats, weights=root / "fe.pth", **args)
    with pytest.raises(FileNotFoundError, match=r"missing.npz: no such file \(--reference-stats: "):
        evaluate(P, ref["samples"], tmp_path / "missing.npz", weights=root / "fe.pth", **args)


def test_evaluate_errors_name_the_file(ref, tmp_path):
    root, P = ref["root"], ref["P"]
    args = dict(run="pretrained", config="full", weights=root / "fe.pth", device="cpu")
    with pytest.raises(ValueError, match="samples.npz: 50 images, the profile asks for 60"):
        evaluate(dict(P, sample=dict(P["sample"], per_class=6)), ref["samples"], ref["stats"],
                 checkpoint=root / "ckpt.pth", **args)
    torch.save({"w": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="samples.npz was sampled from another checkpoint than .*other.pth"):
        evaluate(P, ref["samples"], ref["stats"], checkpoint=tmp_path / "other.pth", **args)
    with pytest.raises(FileNotFoundError, match=r"nothing.npz: no such file \(--samples: "):
        evaluate(P, tmp_path / "nothing.npz", ref["stats"], checkpoint=root / "ckpt.pth", **args)


def test_a_corrupt_reference_png_is_named(ref, tmp_path):
    bad = shutil.copytree(ref["root"] / "eval", tmp_path / "eval")
    png = sorted(bad.rglob("*.png"))[5]
    png.write_bytes(png.read_bytes()[:40])           # truncated
    with pytest.raises(ValueError, match=f"cannot read image {png}"):
        reference.build(ref["P"], bad, tmp_path / "stats.npz", ref["root"] / "fe.pth", device="cpu")
    assert not (tmp_path / "stats.npz").exists()


def test_a_reference_batch_npz_is_read_and_its_own_statistics_compared(ref, tmp_path):
    """The paper's reference is the ADM batch (.npz: arr_0 images, plus its own mu/sigma):
    features come from its images; the FID to its statistics is recorded as a check."""
    images, _ = load_images(ref["root"] / "eval")
    own = reference.load(ref["stats"], "variant-tiny", weights=ref["root"] / "fe.pth")
    batch = tmp_path / "VIRTUAL_ref.npz"
    np.savez(batch, arr_0=images.permute(0, 2, 3, 1).numpy(), mu=own.mu, sigma=own.sigma)
    meta = reference.build(ref["P"], batch, tmp_path / "stats.npz", ref["root"] / "fe.pth", device="cpu")
    assert meta["reference_sha256"] == sha256_file(batch) and abs(meta["fid_vs_batch_statistics"]) < 1e-6
    with pytest.raises(FileNotFoundError, match=r"absent.npz: no such file \(--reference: "):
        reference.build(ref["P"], tmp_path / "absent.npz", tmp_path / "s.npz", ref["root"] / "fe.pth")
