"""`variant stand-ins` on a tiny copy of the rehearsal profile: random-weight files in the
released layouts, an ImageNet-layout folder, an ADM-layout reference batch and a random
Inception; kept on a second run, and accepted by the real `variant fetch` path."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import cli_main
from variant import standins
from variant.metrics import extract_features, feature_layer, fid_stats, image_set
from variant.models import VAR
from variant.models.checkpoint import build_vae, build_var, read_state_dict

REPO = Path(__file__).resolve().parents[2]
PATCH_NUMS = [1, 2, 3, 4, 5, 6, 8]
VAE = {"vocab_size": 64, "z_channels": 8, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "share_quant_resi": 4}
FILES = ["vae_ch160v4096z32.pth", "var_d4.pth"]
REFERENCE = 8


def tiny_rehearsal() -> dict:
    """The repo's rehearsal profile (its merge keys resolved by the YAML load) at tiny shapes."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    p = doc["profiles"]["rehearsal"]
    assert p["data"]["source"] == "imagefolder" and p["fetch"]["reference_batch"]   # merged from paper
    p["device"] = "cpu"
    p["data"].update(num_classes=3, image_size=16)
    p["model"] = {"patch_nums": PATCH_NUMS, "vae": dict(VAE), "var": {"depth": 4}}
    p["fetch"]["files"] = list(FILES)
    p["train"].update(subnet_depths=[2], phases={2: [1, 1, 1]}, fixed_ratios={"depth": 2, "p": [0.5]})
    p["sample"].update(table1_depth=2, fig7={"classes": [1, 2], "per_class": 1})
    return {"profile": "rehearsal", "profiles": {"rehearsal": p}}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The stand-ins made once for this module: (cwd, env, data root, torch home, params, stdout)."""
    root = tmp_path_factory.mktemp("rehearsal")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_rehearsal(), sort_keys=False))
    data, torch_home = root / "imagenet" / "train", root / "torch"
    env = {"VARIANT_DATA_ROOT": data}
    r = cli_main("stand-ins", "--profile", "rehearsal", "--data-root", data, "--torch-home", torch_home,
                 "--reference-images", REFERENCE, cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    return root, env, data, torch_home, r.stdout


def pretrained(root: Path) -> Path:
    return root / "artifacts" / "rehearsal" / "pretrained"


def inception_file(torch_home: Path) -> Path:
    from variant.metrics import URL_INCEPTION_V3
    return torch_home / "hub" / "checkpoints" / Path(URL_INCEPTION_V3).name


def test_released_files_load_with_the_released_layout(rehearsal):
    root = rehearsal[0]
    sd = read_state_dict(pretrained(root) / "var_d4.pth")
    var = build_var(sd, "var_d4.pth")
    assert var.depth == 4 and len(var.blocks) == 4 and tuple(var.patch_nums) == tuple(PATCH_NUMS)
    fresh = VAR(depth=4, num_classes=3, vocab_size=VAE["vocab_size"], cvae=VAE["z_channels"],
                patch_nums=PATCH_NUMS).state_dict()
    assert list(sd) == list(fresh)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in fresh.items()}
    vae = build_vae(read_state_dict(pretrained(root) / FILES[0]), PATCH_NUMS, FILES[0])
    assert vae.quantize.embedding.weight.shape == (VAE["vocab_size"], VAE["z_channels"])


def test_image_folder_has_one_jpeg_per_class_of_at_least_the_image_size(rehearsal):
    data = rehearsal[2]
    classes = sorted(p for p in data.iterdir())
    assert [c.is_dir() for c in classes] == [True] * 3
    for c in classes:
        [jpeg] = list(c.iterdir())
        assert jpeg.suffix == ".JPEG"
        with Image.open(jpeg) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) >= 16


def test_reference_batch_has_adms_layout(rehearsal):
    root = rehearsal[0]
    with np.load(pretrained(root) / "VIRTUAL_imagenet256_labeled.npz") as npz:
        assert set(npz.files) == {"arr_0", "mu", "sigma"}
        arr, mu, sigma = npz["arr_0"], npz["mu"], npz["sigma"]
    assert arr.shape == (REFERENCE, 16, 16, 3) and arr.dtype == np.uint8 and arr.std() > 0
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    assert np.isfinite(mu).all() and np.isfinite(sigma).all() and np.allclose(sigma, sigma.T)


def test_inception_stand_in_loads_and_is_marked_not_the_release(rehearsal):
    from variant.metrics import INCEPTION, RELEASE_SHA256_PREFIX, check_weights, weights_verdict
    path = inception_file(rehearsal[3])
    check_weights(INCEPTION, path)     # raises unless torch-fidelity's Inception layers are in it
    sha = sha256(path)
    assert not sha.startswith(RELEASE_SHA256_PREFIX)
    assert weights_verdict(INCEPTION, sha).startswith("NOT torch-fidelity's release")
    assert weights_verdict(INCEPTION, RELEASE_SHA256_PREFIX + "0" * 56) == "torch-fidelity's release"
    with pytest.raises(ValueError, match="no Inception-v3 layers"):   # a VAR file is refused
        check_weights(INCEPTION, pretrained(rehearsal[0]) / "var_d4.pth")


def test_a_second_run_keeps_every_file(rehearsal):
    root, env, data, torch_home, _ = rehearsal
    made = [p for p in (*pretrained(root).iterdir(), *data.rglob("*"), inception_file(torch_home)) if p.is_file()]
    assert len(made) == len(FILES) + 1 + 3 + 1
    before = {p: p.stat().st_mtime_ns for p in made}
    r = cli_main("stand-ins", "--profile", "rehearsal", "--data-root", data, "--torch-home", torch_home,
                 "--reference-images", REFERENCE, cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert {p: p.stat().st_mtime_ns for p in made} == before
    assert "exists, kept" in r.stdout


def test_fetch_verifies_records_and_links_the_stand_ins(rehearsal):
    root, env, *_ = rehearsal
    out = pretrained(root)
    r = cli_main("fetch", "--profile", "rehearsal", "--no-progress", cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "fetch.json").read_text())
    assert manifest["profile"] == "rehearsal"
    names = [*FILES, "VIRTUAL_imagenet256_labeled.npz"]
    assert set(manifest["files"]) == {*names, "vae.pth", "var.pth"}
    for name in names:
        entry = manifest["files"][name]
        assert entry["sha256"] == sha256(out / name) and entry["size"] == (out / name).stat().st_size
        assert entry["source"].startswith("present before the first fetch")
    for link, src in (("vae.pth", FILES[0]), ("var.pth", "var_d4.pth")):
        assert (out / link).stat().st_ino == (out / src).stat().st_ino          # a hard link, no copy
        assert manifest["files"][link]["sha256"] == manifest["files"][src]["sha256"]
        assert manifest["files"][link]["source"] == f"hard link of {src}"
    var = VAR(depth=4, num_classes=3, vocab_size=VAE["vocab_size"], cvae=VAE["z_channels"], patch_nums=PATCH_NUMS)
    assert manifest["loaded"]["var_params"] == sum(p.numel() for p in var.parameters())
    assert manifest["loaded"]["vae_params"] > 0

    # a stand-in changed after it was recorded is refused, naming the file
    recorded, good = manifest["files"]["var_d4.pth"]["sha256"], (out / "var_d4.pth").read_bytes()
    sd = read_state_dict(out / "var_d4.pth")
    sd["head.bias"] = sd["head.bias"] + 1
    try:
        torch.save(sd, out / "var_d4.pth")
        r = cli_main("fetch", "--profile", "rehearsal", "--no-progress", cwd=root, env=env)
        assert r.returncode == 2 and "var_d4.pth" in r.stderr and recorded in r.stderr
    finally:   # the module's other tests read the file (in place: var.pth is the same inode)
        (out / "var_d4.pth").write_bytes(good)


def test_the_random_inception_gives_each_image_its_own_features(tmp_path):
    """With torch's default init the activations shrank to ~1e-8 and every image got the
    same features (the rehearsal's FIDs were 1e-12); the stand-in's must vary between
    images, so that FID, precision and recall compute on real spreads."""
    rng = np.random.default_rng(0)
    images = np.stack([np.asarray(standins._jpeg(rng, 128, 128)) for _ in range(4)])
    weights = standins.random_inception(tmp_path / "inception.pth")
    layer = feature_layer("inception-v3-compat", "fid")
    feats = torch.as_tensor(extract_features(image_set(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()),
                                             [layer], "inception-v3-compat", weights, "cpu")[layer]).double()
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()
    spread, size = feats.std(0).mean().item(), feats.abs().mean().item()
    assert size > 1e-2 and spread > 1e-2 * size, (size, spread)
    assert np.trace(fid_stats(feats)["sigma"]) > 0
