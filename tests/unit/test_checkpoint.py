"""Loading the reference layout strictly, and every error a user can meet."""
import json

import pytest
import torch

from conftest import GOLDEN, small_var
from variant.models.checkpoint import (CheckpointError, build_vae, build_var, load_models, load_strict,
                                       read_state_dict, save_state_dict, var_config)
from variant.util.hashing import sha256_file
from variant.models import VAR


def golden_sd(name):
    return read_state_dict(GOLDEN / name)


def test_reference_layout_loads_strictly_with_buffers():
    keys = json.loads((GOLDEN / "config.json").read_text())
    var, vae = load_models(GOLDEN / "var.pth", GOLDEN / "vae.pth")
    for model, listed in ((var, keys["var_keys"]), (vae, keys["vae_keys"])):
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert own == {k: tuple(v) for k, v in listed.items()}   # same names, shapes, buffers


def test_our_checkpoints_keep_the_reference_layout(tmp_path):
    var = small_var(shared_aln=True)
    digest = save_state_dict(var, tmp_path / "var.pth")
    assert digest == sha256_file(tmp_path / "var.pth")
    again = build_var(read_state_dict(tmp_path / "var.pth"))
    assert again.shared_aln and again.depth == var.depth and again.width == var.width
    assert all(torch.equal(a, b) for a, b in zip(var.state_dict().values(), again.state_dict().values()))
    assert "shared_ada_lin.1.weight" in again.state_dict() and "blocks.0.ada_gss" in again.state_dict()
    assert not list(tmp_path.glob(".*tmp"))   # the atomic write left nothing behind


def test_sizes_are_read_off_the_tensors():
    cfg = var_config(golden_sd("var.pth"))
    assert (cfg["depth"], cfg["width"], cfg["num_heads"], cfg["patch_nums"]) == (4, 64, 2, (1, 2, 3, 4))


def test_vqvae_statistics_of_another_scale_count_are_tolerated():
    sd = dict(golden_sd("vae.pth"))
    sd["quantize.ema_vocab_hit_SV"] = torch.zeros(10, 64)   # as if trained with 10 scales
    vae = build_vae(sd, (1, 2, 3, 4))
    assert torch.equal(vae.quantize.ema_vocab_hit_SV, torch.zeros(4, 64))   # fresh statistics, not memory


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: no such checkpoint file"):
        read_state_dict(tmp_path / "nope.pth")


def test_not_a_torch_file(tmp_path):
    (tmp_path / "bad.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="bad.pth: not a readable torch checkpoint"):
        read_state_dict(tmp_path / "bad.pth")


@pytest.mark.parametrize("obj, needle", [
    ([torch.zeros(1)], "not a state dict but a list"),
    ({"epoch": 3, "args": "x"}, "top-level keys are 'epoch', 'args'"),
])
def test_not_a_state_dict(tmp_path, obj, needle):
    torch.save(obj, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=needle):
        read_state_dict(tmp_path / "x.pth")


def test_wrapped_state_dict_is_unwrapped(tmp_path):
    torch.save({"model": golden_sd("var.pth"), "epoch": 1}, tmp_path / "w.pth")
    assert set(read_state_dict(tmp_path / "w.pth")) == set(golden_sd("var.pth"))


def test_missing_and_unexpected_keys_are_named():
    sd = dict(golden_sd("var.pth"))
    del sd["head.bias"]
    sd["blocks.9.attn.proj.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): head.bias; 1 unexpected key\(s\): blocks.9.attn.proj.weight"):
        load_strict(VAR(depth=4, width=64, num_heads=2, num_classes=10, vocab_size=64, cvae=8,
                        patch_nums=(1, 2, 3, 4)), sd, "var.pth")


def test_shape_mismatch_names_key_and_sizes():
    model = VAR(depth=4, width=128, num_heads=2, num_classes=10, vocab_size=64, cvae=8, patch_nums=(1, 2, 3, 4))
    with pytest.raises(CheckpointError, match=r"var.pth: key 'pos_start' has shape \(1, 1, 64\) but the model "
                                              r"expects \(1, 1, 128\): the checkpoint is a depth-4 VAR of width 64, "
                                              r"the model depth 4 of width 128"):
        load_strict(model, golden_sd("var.pth"), "var.pth")


def test_vae_in_place_of_var_is_explained():
    with pytest.raises(CheckpointError, match="key 'pos_start' is missing, so this is not a VAR"):
        build_var(golden_sd("vae.pth"), "vae.pth")


def test_build_var_skips_random_init_and_keeps_every_tensor_and_drop_path_buffer():
    var = small_var(depth=4)
    sd = var.state_dict()
    torch.manual_seed(123)
    state_before = torch.get_rng_state()
    built = build_var(sd, drop_path_rate=0.3)
    # no random initialisation ran: the global RNG was not drawn from
    assert torch.equal(torch.get_rng_state(), state_before)
    assert built.state_dict().keys() == sd.keys()
    assert all(torch.equal(built.state_dict()[k], v) for k, v in sd.items())
    fresh = VAR(**{**var_config(sd), "drop_path_rate": 0.3})   # the non-persistent buffers
    assert [b.keep_prob.item() for b in built.blocks] == [b.keep_prob.item() for b in fresh.blocks]
    assert [b.drops for b in built.blocks] == [False, True, True, True]


@pytest.mark.parametrize("name, key", [("var.pth", "blocks.0.attn.proj.weight"), ("vae.pth", "decoder.conv_in.weight")])
def test_load_models_checks_the_values_where_they_land(tmp_path, name, key):
    """load_models reads without the CPU check and checks on the device: a NaN in either
    file is still refused, naming the file and the tensor."""
    for f in ("var.pth", "vae.pth"):
        sd = golden_sd(f)
        if f == name:
            sd[key].view(-1)[0] = float("nan")
        save_state_dict(sd, tmp_path / f)
    with pytest.raises(CheckpointError, match=f"{name}: tensor '{key}' holds NaN or infinite values"):
        load_models(tmp_path / "var.pth", tmp_path / "vae.pth")
