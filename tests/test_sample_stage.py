"""The sample stage: seeded shards (one job each, then a pack), resume, and its errors."""
import hashlib

import numpy as np
import pytest

from conftest import PATCH_NUMS, small_vae, small_var
from variant import sample as stage
from variant.checkpoint import CheckpointError, save_state_dict, sha256_file
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
        assert f["labels"].tolist() == [c for c in range(5) for _ in range(3)]
    before = {p.name: digest(p) for p in shards}

    shards[2].unlink()                                        # a shard lost (job killed)
    calls = []
    real = stage.sample_shard
    monkeypatch.setattr(stage, "sample_shard", lambda *a, **k: calls.append(1) or real(*a, **k))
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "d2_N2", out)
    assert len(calls) == 1                                    # only the missing shard is redone
    assert {p.name: digest(p) for p in shards} == before      # and it is byte-identical


def test_shard_jobs_then_pack_equal_one_job(setup):
    """The paper's layout: one job per shard (no packing), then a cheap pack job."""
    P, tmp = setup
    one = stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "one" / "full.npz")
    for s in range(4):
        stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "jobs" / "full.npz", shards=[s])
        assert not (tmp / "jobs" / "full.npz").exists()           # a shard job never packs
    stage.pack(P, tmp / "var.pth", "full", tmp / "jobs" / "full.npz")
    assert digest(tmp / "jobs" / "full.npz") == digest(one)
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


@pytest.mark.parametrize("name, ok", [("full", True), ("d4_N6", True), ("d4_S1-2-3", True),
                                      ("d4", False), ("N6", False), ("d4_N6_x", False)])
def test_parse_config(name, ok):
    if ok:
        assert stage.parse_config(name, 8, 10).subnet_depth in (4, 8)
    else:
        with pytest.raises(ValueError, match="is not `full`"):
            stage.parse_config(name, 8, 10)
