"""The sample stage: seeded shards, resume, and the evaluate stage's parquet row."""
import hashlib

import numpy as np
import pytest

from conftest import small_vae, small_var
from variant import sample as stage
from variant.checkpoint import save_state_dict
from variant.config import load_params


@pytest.fixture
def setup(tmp_path):
    var, vae = small_var(), small_vae()
    save_state_dict(var, tmp_path / "var.pth")
    save_state_dict(vae, tmp_path / "vae.pth")
    P = load_params(overrides={"data.num_classes": 5, "sample.per_class": 3, "sample.shard_size": 4,
                               "sample.batch_size": 3, "sample.top_k": 8})
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


def test_configurations_and_seeds_differ(setup):
    P, tmp = setup
    a = stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "s" / "full.npz", shards=[0])
    stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "d2_N2", tmp / "s" / "d2_N2.npz", shards=[0])
    assert not a.exists()                                      # one shard of four: not packed yet
    assert digest(tmp / "s" / "full" / "shard-00000.npz") != digest(tmp / "s" / "d2_N2" / "shard-00000.npz")
    assert stage.shard_seed(0, 1) != stage.shard_seed(1, 0)


def test_a_wrong_shard_is_named(setup):
    P, tmp = setup
    bad = tmp / "x" / "full" / "shard-00000.npz"
    stage.save_npz(bad, arr_0=np.zeros((2, 10, 10, 3), np.uint8), labels=np.zeros(2))
    with pytest.raises(ValueError, match="shard-00000.npz: holds 2 images, expected 4"):
        stage.run_sample(P, tmp / "var.pth", tmp / "vae.pth", "full", tmp / "x" / "full.npz")


@pytest.mark.parametrize("name, ok", [("full", True), ("d4_N6", True), ("d4_S1-2-3", True),
                                      ("d4", False), ("N6", False), ("d4_N6_x", False)])
def test_parse_config(name, ok):
    if ok:
        assert stage.parse_config(name, 8, 10).subnet_depth in (4, 8)
    else:
        with pytest.raises(ValueError, match="is not `full`"):
            stage.parse_config(name, 8, 10)
