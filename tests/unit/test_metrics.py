"""The tiny feature extractor learns the synthetic classes, and the metrics computed with it
through torch-fidelity behave as FID, IS and precision/recall should."""
import json
import urllib.error

import numpy as np
import pytest
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from variant import metrics
from variant.tiny.data import make_synthetic_dataset
from variant.tiny.extractor import TINY, accuracy, load_feature_net, train_feature_extractor
from variant.metrics import compute_metrics
from variant.util.images import load_images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """10 classes x 100 images to train on and score against, a held-out seed, the extractor."""
    root = tmp_path_factory.mktemp("tiny")
    make_synthetic_dataset(root / "train", per_class=100, seed=0)
    make_synthetic_dataset(root / "heldout", per_class=30, seed=1)
    info = train_feature_extractor(root / "train", root / "fe.pt", epochs=10, seed=0)   # held-out accuracy 0.84
    real, _ = load_images(root / "train")
    return {"root": root, "weights": root / "fe.pt", "info": info, "real": real}


def score(generated, reference, tiny, **kw):
    return compute_metrics(generated, reference, weights_path=tiny["weights"], device="cpu", **kw)


def noisy(images, sigma, seed=0):
    noise = sigma * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def test_extractor_learns_the_classes(tiny):
    sidecar = json.loads(tiny["weights"].with_suffix(".json").read_text())
    assert sidecar == tiny["info"] and sidecar["val_images"] == 100
    heldout_images, heldout_labels = load_images(tiny["root"] / "heldout")
    acc = accuracy(load_feature_net(tiny["weights"]), heldout_images, heldout_labels)
    print(f"extractor accuracy: split {sidecar['val_accuracy']:.3f}, other seed {acc:.3f}, "
          f"{sidecar['train_seconds']} s")
    assert sidecar["val_accuracy"] > 0.6 and acc > 0.6  # chance is 0.1


def test_registered_with_torch_fidelity(tiny):
    cls = FEATURE_EXTRACTORS_REGISTRY[TINY]
    fe = cls(TINY, ["logits_unbiased", "pool"], feature_extractor_weights_path=str(tiny["weights"]))
    big = torch.nn.functional.interpolate(tiny["real"][:4], scale_factor=2)  # resized inside
    logits, pool = fe(big)
    assert logits.shape == (4, 10) and pool.shape == (4, 128)
    with pytest.raises(ValueError, match="uint8"):
        fe(big.float())


def test_set_against_itself(tiny):
    real = tiny["real"]                          # class-sorted, as read from the directory
    shuffled = real[torch.from_numpy(np.random.default_rng(0).permutation(len(real)))]
    m = score(shuffled, real, tiny)
    print(f"self: {m}")
    assert abs(m["fid"]) < 1e-6
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["isc_mean"] > 3  # confident, diverse class posteriors; 10 would be perfect
    assert m["num_generated"] == m["num_reference"] == 1000
    assert m["fid_statistics"] == metrics.COMPUTED


def test_inception_score_splits_are_contiguous_as_adm(tiny):
    """ADM's evaluator splits the samples in file order, unshuffled: a class-sorted set
    gives each split one class, so its IS collapses; isc_order scores it in another order."""
    real = tiny["real"]
    perm = np.random.default_rng(0).permutation(len(real))
    in_order = score(real, real, tiny)
    reordered = score(real, real, tiny, isc_order=perm)
    shuffled = score(real[torch.from_numpy(perm)], real, tiny)
    print(f"IS class-sorted {in_order['isc_mean']:.3f}, reordered {reordered['isc_mean']:.3f}")
    assert in_order["isc_mean"] < 1.5 < 3 < reordered["isc_mean"]
    assert reordered["isc_mean"] == shuffled["isc_mean"] and reordered["isc_std"] == shuffled["isc_std"]
    for key in ("fid", "precision", "recall"):                  # order-free
        assert in_order[key] == pytest.approx(shuffled[key], abs=1e-9), key
    with pytest.raises(ValueError, match="isc_order is not a permutation of the 1000"):
        score(real, real, tiny, isc_order=np.zeros(len(real), int))


def test_fid_grows_with_noise(tiny):
    real = tiny["real"]
    fids = [score(noisy(real, sigma), real, tiny)["fid"] for sigma in (4, 16, 48)]
    pure = score(torch.randint(0, 256, real.shape, dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(1)), real, tiny)
    print(f"fid at noise sigma 4/16/48: {fids}, uniform noise: {pure}")
    assert 1e-6 < fids[0] < fids[1] < fids[2] < pure["fid"]
    assert pure["fid"] > 10 * fids[1] and pure["fid"] > 20
    assert pure["recall"] < 0.1 and pure["isc_mean"] < 1.5


def test_png_dir_npz_and_tensor_agree(tiny, tmp_path):
    heldout = tiny["root"] / "heldout"
    images, _ = load_images(heldout)  # the order in which the directory is read
    npz = tmp_path / "samples.npz"
    np.savez(npz, images.permute(0, 2, 3, 1).numpy())  # arr_0, NHWC: the ADM format
    from_dir = score(heldout, tiny["root"] / "train", tiny)
    from_npz = score(npz, tiny["real"], tiny)
    from_tensor = score(images, tiny["real"], tiny)
    print(f"held-out seed vs train: {from_dir}")
    for key in ("fid", "isc_mean", "isc_std", "precision", "recall"):
        assert from_npz[key] == pytest.approx(from_dir[key], rel=1e-9, abs=1e-9), key
        assert from_tensor[key] == pytest.approx(from_dir[key], rel=1e-9, abs=1e-9), key
    assert from_dir["num_generated"] == 300 and from_dir["num_reference"] == 1000


def test_clear_errors(tiny, tmp_path):
    real = tiny["real"]
    with pytest.raises(FileNotFoundError, match="reference not found: .*missing_ref"):
        score(real, tmp_path / "missing_ref", tiny)
    with pytest.raises(FileNotFoundError, match="no_weights.pt"):
        compute_metrics(real, real, weights_path=tmp_path / "no_weights.pt", device="cpu")
    with pytest.raises(ValueError, match="weights_path"):
        compute_metrics(real, real, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images \(.*\.png.*\) found under .*empty"):
        score(tmp_path / "empty", real, tiny)
    with pytest.raises(ValueError, match="generated is empty"):
        score(real[:0], real, tiny)
    with pytest.raises(ValueError, match="generated images are 16x16 but reference images are 32x32"):
        score(real[:, :, :16, :16], real, tiny)
    with pytest.raises(ValueError, match="too few images"):
        score(real[:3], real, tiny)
    np.savez(tmp_path / "wrong.npz", images=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="no arr_0"):
        score(tmp_path / "wrong.npz", real, tiny)
    with pytest.raises(ValueError, match="uint8"):
        score(real.float(), real, tiny)


def test_inception_weights_errors(tiny, tmp_path, monkeypatch):
    real = tiny["real"][:20]
    with pytest.raises(FileNotFoundError, match="inception.pth"):
        compute_metrics(real, real, extractor=metrics.INCEPTION, weights_path=tmp_path / "inception.pth")

    def offline(url, dst, **kw):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    assert metrics.inception_weights_location() == expected
    with pytest.raises(FileNotFoundError, match=f"place it at {expected}"):
        compute_metrics(real, real, extractor=metrics.INCEPTION, device="cpu")


def test_fid_interval_brackets_fid_and_narrows_with_more_samples():
    """Gaussian features N(0.5, I) against the reference N(0, I) in 16 dimensions: FID is
    16 * 0.25 = 4 plus the finite-sample bias; a 95% bootstrap interval brackets the point
    estimate, repeats for a seed, and halves in width for 4x the samples (1/sqrt(n))."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from variant.metrics import fid_interval
    F = 16
    mu, sigma = np.zeros(F), np.eye(F)
    gen = torch.Generator().manual_seed(0)
    widths = []
    for n in (2000, 8000):
        feats = (0.5 + torch.randn(n, F, generator=gen, dtype=torch.float64))
        fid = fid_statistics_to_metric(fid_features_to_statistics(feats), {"mu": mu, "sigma": sigma},
                                       False)["frechet_inception_distance"]
        lo, hi = fid_interval(feats, mu, sigma, resamples=200, seed=1)
        assert lo < fid < hi and 3.5 < fid < 4.6, (lo, fid, hi)
        assert (lo, hi) == fid_interval(feats, mu, sigma, resamples=200, seed=1)
        widths.append(hi - lo)
    assert 0.35 < widths[1] / widths[0] < 0.7, widths
    with pytest.raises(ValueError, match="at least 2 resamples"):
        fid_interval(feats, mu, sigma, resamples=1)


def test_metrics_carry_a_bootstrap_interval_when_asked(tiny):
    held = tiny["root"] / "heldout"
    m = score(held, tiny["root"] / "train", tiny, bootstrap=30, seed=0)
    assert m["bootstrap"] == 30 and m["fid_ci_low"] < m["fid"] < m["fid_ci_high"], m
    plain = score(held, tiny["root"] / "train", tiny)
    assert plain["fid"] == m["fid"] and np.isnan(plain["fid_ci_low"]) and plain["bootstrap"] == 0


def test_paired_fid_difference():
    from variant.metrics import fid_stats, paired_fid_difference
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(400, 8, generator=g, dtype=torch.float64)
    stats = fid_stats(ref)
    a = torch.randn(300, 8, generator=g, dtype=torch.float64)
    diff, se = paired_fid_difference(a, a.clone(), stats["mu"], stats["sigma"], resamples=20)
    assert diff == 0 and se == 0                      # the same draws: nothing to tell apart
    b = a + 0.5                                       # the mean moved by 0.5 in 8 dimensions
    diff, se = paired_fid_difference(b, a, stats["mu"], stats["sigma"], resamples=50)
    assert diff - 1.96 * se > 1.0 and se > 0          # about 8 * 0.25 = 2, clearly resolved
    with pytest.raises(ValueError, match="paired sets"):
        paired_fid_difference(a, a[:10], stats["mu"], stats["sigma"], resamples=20)
