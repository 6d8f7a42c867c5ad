"""The sample stage: seeded shards (one job each, then a pack), resume, and its errors."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PATCH_NUMS, small_vae, small_var
from variant.stages import sample as stage
from variant.models.checkpoint import CheckpointError, save_state_dict
from variant.util.hashing import sha256_file
from variant.config import load_params


@pytest.fixture
def setup(tmp_path):
    var, vae = small_var(), small_vae()
    save_state_dict(var, tmp_path / "var.pth")
    save_state_dict(vae, tmp_path / "vae.pth")
    P = load_params(overrides={"data.num_classes": 5, "sample.per_class": 3, "sample.shard_size": 4,
                               "sample.batch_size": 3, "sample.top_k": 8, "model.patch_nums": list(PATCH_NUMS),
                               "model.var": {"depth": 6, "width": 64, "num_heads": 2}, "train.bridge": 2,
                               "sample.bridges": [2], "sample.fig7": {"classes": [0, 1], "per_class": 1}})
    return P, tmp_path


def digest(path):
    with np.load(path) as f:
        return hashlib.sha256(f["arr_0"].tobytes()).hexdigest()


def test_shards_regenerate_identically_and_resume(setup, monkeypatch):
    P, tmp = setup
    out = tmp / "samples" / "d2_N2.npz"
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "d2_N2", out)
    shards = sorted((tmp / "samples" / "d2_N2").glob("shard-*.npz"))
    assert len(shards) == 4                                  # 15 images in shards of 4
    with np.load(out) as f:
        assert f["arr_0"].shape == (15, 10, 10, 3) and f["arr_0"].dtype == np.uint8
        order = stage.class_sorted(f, out)
        assert f["labels"][order].tolist() == [c for c in range(5) for _ in range(3)]
        # the packed file holds the shards' images, shuffled: class order recovers them
        assert np.array_equal(f["arr_0"][order], np.concatenate([np.load(p)["arr_0"] for p in shards]))
    before = {p.name: digest(p) for p in shards}
    packed = sha256_file(out)

    shards[2].unlink()                                        # a shard lost (job killed)
    calls = []
    real = stage.sample_shard
    monkeypatch.setattr(stage, "sample_shard", lambda *a, **k: calls.append(1) or real(*a, **k))
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "d2_N2", out)
    assert len(calls) == 1                                    # only the missing shard is redone
    assert {p.name: digest(p) for p in shards} == before      # and it is byte-identical
    assert sha256_file(out) == packed                         # so is the packed file, zip and all


def test_shard_jobs_then_pack_equal_one_job(setup):
    """The paper's layout: one job per shard (no packing), then a cheap pack job."""
    P, tmp = setup
    one = stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "one" / "full.npz")
    for s in range(4):
        stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "jobs" / "full.npz", shards=[s])
        assert not (tmp / "jobs" / "full.npz").exists()           # a shard job never packs
    stage.pack(P, tmp / "var.pth", "full", tmp / "jobs" / "full.npz")
    assert sha256_file(tmp / "jobs" / "full.npz") == sha256_file(one)
    with pytest.raises(ValueError, match="shard 4 does not exist: the profile has 4 shard"):
        stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "jobs" / "full.npz", shards=[4])


def test_configurations_and_seeds_differ(setup):
    P, tmp = setup
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "s" / "full.npz", shards=[0])
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "d2_N2", tmp / "s" / "d2_N2.npz", shards=[0])
    assert digest(tmp / "s" / "full" / "shard-00000.npz") != digest(tmp / "s" / "d2_N2" / "shard-00000.npz")
    assert stage.shard_seed(0, 1) != stage.shard_seed(1, 0)


def test_bad_shards_are_named_and_redone(setup, capsys):
    P, tmp = setup
    out = tmp / "x" / "full.npz"
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", out)
    good = digest(stage.shard_path(out, 0))
    stage.save_npz(stage.shard_path(out, 0), arr_0=np.zeros((2, 10, 10, 3), np.uint8), labels=np.zeros(2))
    stage.shard_path(out, 1).write_bytes(b"not an npz")
    for shard, error in [(0, "shard-00000.npz: holds 2 images, expected 4"), (1, "shard-00001.npz: corrupt")]:
        with pytest.raises(ValueError, match=error):          # the pack job names it ...
            stage.pack(P, tmp / "var.pth", "full", out)
        stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", out, shards=[shard])
        assert error.split(": ")[0] in capsys.readouterr().out   # ... a sampling job names and redoes it
    assert digest(stage.shard_path(out, 0)) == good
    stage.shard_path(out, 3).unlink()
    with pytest.raises(FileNotFoundError, match="1 of 4 shard.*shard-00003.npz"):
        stage.pack(P, tmp / "var.pth", "full", out)


def test_a_shard_of_another_checkpoint_is_not_reused(setup):
    """A retrained checkpoint leaves old shards behind: their key differs, so they are redone."""
    P, tmp = setup
    out = tmp / "y" / "full.npz"
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", out)
    before = digest(stage.shard_path(out, 2))
    save_state_dict(small_var(seed=1), tmp / "var2.pth")
    with pytest.raises(ValueError, match="shard-00000.npz: made with another checkpoint"):
        stage.pack(P, tmp / "var2.pth", "full", out)
    stage.run_sample(P, tmp / "var2.pth", tmp / "vae.pth", "full", out)
    assert digest(stage.shard_path(out, 2)) != before
    with np.load(out) as f:
        assert str(f["checkpoint_sha256"]) == sha256_file(tmp / "var2.pth")


def test_a_checkpoint_of_another_model_is_refused(setup):
    P, tmp = setup
    save_state_dict(small_var(depth=4), tmp / "d4.pth")
    with pytest.raises(CheckpointError, match="d4.pth: depth is 4 but params model.var.depth is 6"):
        stage.run_sample(P, tmp / "d4.pth", tmp / "vae.pth", "full", tmp / "z" / "full.npz")
    with pytest.raises(CheckpointError, match="var.pth: classes is 5 but params data.num_classes is 7"):
        stage.run_sample(dict(P, data=dict(P["data"], num_classes=7)), tmp / "var.pth", tmp / "vae.pth",
                         "full", tmp / "z" / "full.npz")


def test_a_misspelt_configuration_stops_before_the_model_loads(setup):
    P, tmp = setup
    with pytest.raises(ValueError, match="configuration 'd4_N6_x' is not `full`"):
        stage.run_sample(P, tmp / "absent.pth", tmp / "vae.pth", "d4_N6_x", tmp / "z" / "x.npz")


def test_the_checkpoint_is_read_for_its_sha256_once_across_jobs(setup, monkeypatch, tmp_path):
    """Checkpoints run to gigabytes: the sampling job (shards and pack) reads the VAR file
    once for its sha256, the key and the packed file's record alike, and a later job (the
    pack job, evaluate) finds it remembered (variant.util.hashing.sha256_cached)."""
    from variant.util import hashing
    P, tmp = setup
    monkeypatch.setenv("VARIANT_CACHE", str(tmp_path / "cache"))   # nothing remembered yet
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p, *a: calls.append(Path(p).name) or real(p, *a))
    out = tmp / "once" / "full.npz"
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", out)
    assert calls == ["var.pth"]
    calls.clear()
    stage.pack(P, tmp / "var.pth", "full", out)
    assert calls == []
    with np.load(out) as f:
        assert str(f["checkpoint_sha256"]) == real(tmp / "var.pth")


def test_shards_of_an_earlier_sampler_revision_are_not_reused(setup, monkeypatch):
    """revisions.SAMPLER is in the shard key: shards decoded the old way are remade."""
    P, tmp = setup
    out = tmp / "rev" / "full.npz"
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", out)
    monkeypatch.setattr(stage.revisions, "SAMPLER", stage.revisions.SAMPLER + 1)
    with pytest.raises(ValueError, match="shard-00000.npz: made with another checkpoint, configuration"):
        stage.pack(P, tmp / "var.pth", "full", out)


# ---- the packed file's order -------------------------------------------------------------

def fake_shards(P, tmp, config="full"):
    """Shards as the sample stage writes them (class-major), each image's pixels its
    generation index, so the packed order can be read off the pixels; no model needed."""
    (tmp / "var.pth").write_bytes(b"a checkpoint")
    labels, (size, n_shards) = stage.class_labels(P["data"]["num_classes"], P["sample"]["per_class"]), \
        stage.dag.shard_layout(P)
    key = stage.shard_key(P, config, sha256_file(tmp / "var.pth"))
    out = tmp / "samples" / f"{config}.npz"
    for s in range(n_shards):
        idx = np.arange(s * size, min((s + 1) * size, len(labels)))
        pixels = np.stack([(idx % 256), idx // 256, np.zeros_like(idx)], -1).astype(np.uint8)
        stage.save_npz(stage.shard_path(out, s), arr_0=np.broadcast_to(pixels[:, None, None], (len(idx), 2, 2, 3)),
                       labels=labels[idx], key=np.array(key))
    return out, labels


def generation_index(images):
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


@pytest.mark.parametrize("classes, per_class, shard_size", [(10, 20, 50), (7, 13, 25), (1000, 50, 5000)])
def test_packed_file_is_class_balanced_in_contiguous_splits(tmp_path, classes, per_class, shard_size):
    """ADM's Inception Score takes 10 contiguous splits without shuffling; in the packed
    order each split holds every class n/C times, give or take one, and the recorded
    sample_index puts the file back in class order."""
    P = load_params(overrides={"data.num_classes": classes, "sample.per_class": per_class,
                               "sample.shard_size": shard_size})
    out, labels = fake_shards(P, tmp_path)
    stage.pack(P, tmp_path / "var.pth", "full", out)
    with np.load(out) as f:
        images, packed, index, seed = f["arr_0"], f["labels"], f["sample_index"], int(f["order_seed"])
        order = stage.class_sorted(f, out)
    assert "mu" not in np.load(out).files             # ADM would read those as the file's statistics
    n = len(labels)
    assert seed == stage.order_seed(P["sample"]["seed"])
    assert np.array_equal(generation_index(images), index)      # arr_0[i] is generated image index[i]
    assert np.array_equal(packed, labels[index])
    assert np.array_equal(packed[order], labels) and np.array_equal(generation_index(images[order]), np.arange(n))
    assert not np.array_equal(packed, labels)                  # shuffled
    for i in range(10):                                        # torch-fidelity's (and ADM's) split bounds
        counts = np.bincount(packed[i * n // 10:(i + 1) * n // 10], minlength=classes)
        assert counts.max() - counts.min() <= 1, (i, counts)
        if (i + 1) * n // 10 - i * n // 10 >= classes:
            assert counts.min() >= 1                           # every class in every split
    if classes == 1000:
        assert all((np.bincount(packed[i * 5000:(i + 1) * 5000], minlength=1000) == 5).all() for i in range(10))
    # deterministic: packing again gives the same bytes; another seed, another order
    first = sha256_file(out)
    stage.pack(P, tmp_path / "var.pth", "full", out)
    assert sha256_file(out) == first
    assert np.array_equal(stage.pack_order(labels, seed), index)   # a function of the profile only
    assert not np.array_equal(stage.pack_order(labels, stage.order_seed(1)), index)


def test_pack_names_a_shard_with_other_labels(tmp_path):
    P = load_params(overrides={"data.num_classes": 4, "sample.per_class": 5, "sample.shard_size": 10})
    out, _ = fake_shards(P, tmp_path)
    with np.load(stage.shard_path(out, 1)) as f:
        shard = {k: f[k] for k in f.files}
    stage.save_npz(stage.shard_path(out, 1), **dict(shard, labels=shard["labels"][::-1]))
    with pytest.raises(ValueError, match="shard-00001.npz: labels are not the profile's class-major"):
        stage.pack(P, tmp_path / "var.pth", "full", out)


def test_sample_grid_picks_by_class_in_generation_order(tmp_path, monkeypatch):
    """Figures 4/6 show the first generated image of each class: the same one whether the
    file is packed shuffled or class-sorted (as before the shuffle)."""
    import matplotlib.axes
    from variant.report.grids import sample_grid
    P = load_params(overrides={"data.num_classes": 10, "sample.per_class": 4, "sample.shard_size": None})
    out, labels = fake_shards(P, tmp_path)
    stage.pack(P, tmp_path / "var.pth", "full", out)
    with np.load(out) as f:
        legacy = tmp_path / "legacy.npz"             # the same images in class order, no sample_index
        order = stage.class_sorted(f, out)
        stage.save_npz(legacy, arr_0=f["arr_0"][order], labels=f["labels"][order])
    shown = []
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow",
                        lambda ax, img, **k: shown.append(generation_index(img[None])[0]))
    sample_grid([str(out), str(legacy)], ["shuffled", "class-sorted"], tmp_path / "grid", per_row=8)
    assert shown == [0, 4, 8, 12, 16, 20, 24, 28] * 2              # the first image of classes 0..7


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the decode overlaps sampling on a CUDA side stream")
def test_a_decode_overlapped_with_sampling_gives_the_same_pixels():
    """On a GPU each batch decodes on a side stream behind the next batch's sampling; the
    pixels must be those of decoding in line, batch by batch (seven labels: a short last batch)."""
    var, vae = small_var().cuda(), small_vae().cuda()
    sampler = stage.make_sampler(var, vae, "cuda")
    knobs = {"batch_size": 3, "cfg": 1.5, "top_k": 8, "top_p": 0.0}
    labels = np.arange(7) % 5
    inline = stage.sample_shard(sampler, None, labels, 7, knobs, "cuda", overlap=False)
    overlapped = stage.sample_shard(sampler, None, labels, 7, knobs, "cuda", overlap=True)
    assert inline.shape == (7, vae.image_size, vae.image_size, 3) and inline.dtype == np.uint8
    assert np.array_equal(inline, overlapped)
