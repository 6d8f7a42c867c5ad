"""Bad inputs to evaluate, sample, grid, tokenize, train and reference-stats, and bad
params: each is refused through the CLI with one line naming the file or key, exit 2, no
traceback, and nothing written where the output would go."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import cli_main, small_var
from test_reference import ref  # noqa: F401  (fixture: extractor, reference stats, 50 samples)
from test_sample_stage import fake_shards
from test_train import setup as train_setup  # noqa: F401  (fixture: images, VAR/VQVAE, tokens)
from variant.stages import tokenize as tok
from variant.models.checkpoint import save_state_dict
from variant.config import load_params
from variant.util.files import UnreadableFile, open_npz

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"

pytestmark = pytest.mark.fault


def variant(*args, cwd=ROOT):
    """`variant ARGS` from the repository root, in this process (the message and status)."""
    return cli_main(*args, cwd=cwd)


def refused(r, command: str, *needles, nothing_at=()):
    """Exit 2 with one line `variant COMMAND: error: ...` holding every needle; no traceback,
    and no file at (or beside, as a temporary) any of `nothing_at`."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"variant {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    for out in map(Path, nothing_at):
        assert not out.exists() and not list(out.parent.glob(f".{out.name}.*")), out
    return lines[0]


def params_with(tmp_path, overrides: dict, name="params.yaml") -> Path:
    """params.yaml with dotted overrides in the tiny profile (load_params' own syntax)."""
    doc = yaml.safe_load(PARAMS.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = doc["profiles"]["tiny"]
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    load_params(path)   # the setup itself is valid
    return path


def params_text(tmp_path, old: str, new: str) -> Path:
    """params.yaml with one text edit: YAML spellings (1e-4, .nan, a repeated key) survive."""
    text = PARAMS.read_text()
    assert old in text, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


BAD_NPZ = ["truncated", "empty", "not-npz", "npy", "foreign", "corrupt-member"]


def bad_npz(kind: str, good: Path, foreign: Path, out: Path) -> Path:
    """`out`: `good` (an .npz) spoilt in one of the ways a file arrives spoilt."""
    data = good.read_bytes()
    if kind == "truncated":
        out.write_bytes(data[:len(data) // 2])           # a copy cut short
    elif kind == "empty":
        out.write_bytes(b"")
    elif kind == "not-npz":
        out.write_bytes(b"random bytes, no archive")
    elif kind == "npy":
        with open(out, "wb") as f:                         # np.save's format under an .npz name
            np.save(f, np.zeros((2, 4, 4, 3), np.uint8))
    elif kind == "foreign":
        shutil.copy(foreign, out)                          # an .npz of another kind
    else:                                                  # the zip directory intact, a member's bytes not
        b = bytearray(data)
        b[len(b) // 2] ^= 0xFF
        out.write_bytes(bytes(b))
    return out


# ---- evaluate, grid: the sample file --------------------------------------------------------------

def evaluate_args(ref, tmp_path, samples, config="full", params=None):
    root = ref["root"]
    params = params or params_with(tmp_path, {"data.num_classes": 10, "sample.per_class": 5})
    return ["evaluate", "--params", params, "--samples", samples, "--reference-stats", ref["stats"],
            "--weights", root / "fe.pth", "--run", "pretrained", "--config", config, "--checkpoint", root / "ckpt.pth",
            "--out", tmp_path / "row.parquet", "--device", "cpu"]


@pytest.mark.parametrize("kind", BAD_NPZ)
def test_every_spoilt_npz_is_one_named_error(ref, tmp_path, kind):  # noqa: F811
    """In process, so every way a file arrives spoilt is cheap to try; the CLI runs below."""
    bad = bad_npz(kind, ref["samples"], ref["stats"], tmp_path / "samples.npz")
    with pytest.raises(UnreadableFile) as e:
        with open_npz(bad, "sample file", "rerun it", required=["arr_0"]) as f:
            f["arr_0"], f["labels"]
    assert str(e.value).startswith(f"{bad}: not a readable sample file (") and str(e.value).endswith("; rerun it)")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["truncated", "empty", "foreign"])
def test_evaluate_names_a_bad_samples_file(ref, tmp_path, kind):  # noqa: F811
    bad = bad_npz(kind, ref["samples"], ref["stats"], tmp_path / "samples.npz")
    r = variant(*evaluate_args(ref, tmp_path, bad))
    refused(r, "evaluate", f"{bad}: not a readable sample file (", nothing_at=[tmp_path / "row.parquet"])


def test_evaluate_checks_the_configuration_before_any_metric(ref, tmp_path, monkeypatch):  # noqa: F811
    r = variant(*evaluate_args(ref, tmp_path, ref["samples"], config="d4_M6"))
    refused(r, "evaluate", "configuration 'd4_M6' is not", nothing_at=[tmp_path / "row.parquet"])
    from variant.stages import evaluate as stage
    monkeypatch.setattr(stage, "compute_metrics", lambda *a, **k: pytest.fail("metrics computed"))
    monkeypatch.setattr(stage, "load_reference", lambda *a, **k: pytest.fail("reference read"))
    with pytest.raises(ValueError, match="configuration 'bogus'"):
        stage.evaluate(ref["P"], ref["samples"], ref["stats"], "pretrained", "bogus", ref["root"] / "ckpt.pth")
    with pytest.raises(ValueError, match="run 'progressive_d4_seed1' is not"):   # the run too: its train_seed
        stage.evaluate(ref["P"], ref["samples"], ref["stats"], "progressive_d4_seed1", "full", ref["root"] / "ckpt.pth")


@pytest.mark.parametrize("kind", ["truncated", "empty", "foreign"])
def test_grid_names_a_bad_samples_file(ref, tmp_path, kind):  # noqa: F811
    bad = bad_npz(kind, ref["samples"], ref["stats"], tmp_path / "bad.npz")
    r = variant("grid", ref["samples"], bad, "--out", tmp_path / "fig" / "grid")
    refused(r, "grid", f"{bad}: not a readable sample file (")
    assert not (tmp_path / "fig").exists()


# ---- sample --pack: a shard ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["truncated", "empty", "foreign"])
def test_pack_names_a_bad_shard(tmp_path, kind):
    over = {"data.num_classes": 4, "sample.per_class": 5, "sample.shard_size": 10}
    out, _ = fake_shards(load_params(overrides=over), tmp_path)
    shard = out.with_suffix("") / "shard-00001.npz"
    np.savez(tmp_path / "foreign.npz", images=np.zeros(3))
    shutil.move(bad_npz(kind, shard, tmp_path / "foreign.npz", tmp_path / "x.npz"), shard)
    r = variant("sample", "--params", params_with(tmp_path, over), "--var", tmp_path / "var.pth",
                "--config", "full", "--out", out, "--pack")
    refused(r, "sample", f"{shard}: corrupt sample shard (", "delete it to regenerate", nothing_at=[out])


# ---- tokens: a cut shard ------------------------------------------------------------------------

def cut_tokens(train_setup, tmp_path) -> Path:  # noqa: F811
    tokens = shutil.copytree(train_setup / "tokens", tmp_path / "tokens")
    for shard in sorted(tokens.glob("shard-*.pt")):   # every shard: whichever the first batch reads
        shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
    return tokens


def test_train_names_a_cut_token_shard(train_setup, tmp_path):  # noqa: F811
    tokens = cut_tokens(train_setup, tmp_path)
    params = params_with(tmp_path, {"train.bridge": 3, "train.batch_size": 8, "sample.bridges": [3]})
    out, log = tmp_path / "run" / "final.pth", tmp_path / "run" / "log.parquet"
    r = variant("train", "--params", params, "--run", "progressive_d4", "--init", train_setup / "var.pth",
                "--vae", train_setup / "vae.pth", "--tokens", tokens, "--out", out, "--log", log,
                "--epochs-override", 1, 0, 0, "--device", "cpu", "--no-compile")
    line = refused(r, "train", ": not a readable token shard (sha256 ", "recorded in index.json",
                   nothing_at=[out, log])
    assert str(tokens / "shard-0000") in line


def test_token_shards_are_hashed_once_per_process(train_setup, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tok, "_VERIFIED", set())
    calls = []
    real_sha = tok.sha256_file
    monkeypatch.setattr(tok, "sha256_file", lambda p, *a: calls.append(Path(p).name) or real_sha(p, *a))
    for _ in range(2):                                   # two datasets, as a train run and a resumed one
        ds = tok.TokenDataset(train_setup / "tokens")
        ids = torch.arange(len(ds))
        ds.gather(ids), ds.gather(ids.flip(0))
    n = len(ds.index["shards"])
    assert sorted(calls) == [f"shard-{s:05d}.pt" for s in range(n)]   # each hashed once


def test_tokenize_rerun_recomputes_a_cut_shard(train_setup, tmp_path):  # noqa: F811
    tokens = shutil.copytree(train_setup / "tokens", tmp_path / "tokens")
    shard = tokens / "shard-00001.pt"
    whole = shard.read_bytes()
    shard.write_bytes(whole[:len(whole) // 2])
    params = params_with(tmp_path, {"model.patch_nums": [1, 2, 3, 4, 5], "data.image_size": 10,
                                    "train.bridge": 3, "sample.bridges": [3]})
    r = variant("tokenize", "--params", params, "--vae", train_setup / "vae.pth", "--data", train_setup / "images",
                "--out", tokens, "--shard-size", 16, "--batch-size", 16, "--workers", 0, "--device", "cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{shard}: missing or not the shard index.json recorded; recomputing it" in r.stdout
    ds = tok.TokenDataset(tokens)
    ds.gather(torch.arange(len(ds)))                     # every shard verifies against the new index


def test_tokenize_refuses_shard_size_0(tmp_path):
    out = tmp_path / "tokens"
    r = variant("tokenize", "--vae", tmp_path / "vae.pth", "--data", tmp_path / "images", "--out", out,
                "--shard-size", 0)
    refused(r, "tokenize", "--shard-size: 0 is not an integer of at least 1", nothing_at=[out])


# ---- reference-stats: the extractor's weights -----------------------------------------------------

@pytest.mark.parametrize("weights", ["random", "var"])
def test_reference_stats_names_wrong_weights(ref, tmp_path, weights):  # noqa: F811
    bad = tmp_path / f"{weights}.pth"
    if weights == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        save_state_dict(small_var(), bad)                # the VAR checkpoint where the extractor belongs
    out = tmp_path / "ref" / "stats.npz"
    r = variant("reference-stats", "--reference", ref["root"] / "eval", "--weights", bad, "--out", out,
                "--device", "cpu")
    refused(r, "reference-stats", f"{bad}: not a readable feature-extractor weights file (",
            nothing_at=[out, out.with_suffix(".json")])


# ---- the device ---------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_params_device_cuda_without_a_gpu(tmp_path):
    params = params_text(tmp_path, "  tiny:\n    device: cpu", "  tiny:\n    device: cuda")
    # and its jobs given a GPU, or params would be refused before the device is looked at
    text = params.read_text().replace("default: {cpus_per_task: 1, mem_mb: 2000, runtime: 30, gpus: 0}",
                                      "default: {cpus_per_task: 1, mem_mb: 2000, runtime: 30, gpus: 1}", 1)
    params.write_text(text)
    out = tmp_path / "s" / "full.npz"
    r = variant("sample", "--params", params, "--var", tmp_path / "var.pth", "--vae", tmp_path / "vae.pth",
                "--config", "full", "--out", out)
    refused(r, "sample", "profiles.tiny.device: 'cuda', but no CUDA device is available", nothing_at=[out])
    r = variant("tokenize", "--vae", tmp_path / "vae.pth", "--data", tmp_path, "--out", out, "--device", "cuda")
    refused(r, "tokenize", "--device: 'cuda', but no CUDA device is available", nothing_at=[out])


# ---- params.yaml --------------------------------------------------------------------------------

PARAMS_FAULTS = {
    "nan": ("lr: 3.0e-4,", "lr: .nan,", "profiles.tiny.train.optimizer.lr: nan is not a finite number"),
    "inf": ("cfg: 1.5", "cfg: .inf", "profiles.tiny.sample.cfg: inf is not a finite number"),
    "yaml-1.1": ("lr: 3.0e-4,", "lr: 1e-4,", "profiles.tiny.train.optimizer.lr: '1e-4' is not of type 'number' "
                 "(YAML reads 1e-4 as a string: write 1.0e-4)"),
    "top-level": ("profile: tiny\n", "profile: tiny\nprofils: {}\n", "unknown top-level key 'profils' "
                  "(did you mean 'profiles'?)"),
    "duplicate": ("      seed: 0\n    model:", "      seed: 0\n      seed: 1\n    model:",
                  "line 23: duplicate key 'seed' (first on line 22"),
    "misspelt": ("batch_size: 10 ", "batch_sise: 10 ", "profiles.tiny.train: unknown key 'batch_sise' "
                 "(did you mean 'batch_size'?)"),
    "fetch-steps": ("vae: {steps: 80,", "vae: {steps: 0,", "profiles.tiny.fetch.vae.steps: 0 is less than the minimum of 1"),
    "fetch-batch": ("var: {steps: 60, batch_size: 8,", "var: {steps: 60, batch_size: -8,",
                    "profiles.tiny.fetch.var.batch_size: -8 is less than the minimum of 1"),
    "fetch-epochs": ("feature_extractor: {epochs: 8}", "feature_extractor: {epochs: 0}",
                     "profiles.tiny.fetch.feature_extractor.epochs: 0 is less than the minimum of 1"),
    "fetch-misspelt": ("feature_extractor: {epochs: 8}", "feature_extractor: {epoch: 8}",
                       "profiles.tiny.fetch.feature_extractor: unknown key 'epoch' (did you mean 'epochs'?)"),
    "no-epoch": ("phases: {2: [1, 2, 1],", "phases: {2: [0, 0, 0],",
                 "profiles.tiny.train.phases.2: [0, 0, 0] trains no epoch"),
}


@pytest.mark.parametrize("fault", PARAMS_FAULTS)
def test_bad_params_stop_before_any_work(tmp_path, fault):
    old, new, needle = PARAMS_FAULTS[fault]
    out = tmp_path / "dvc.yaml"
    r = variant("dvc-yaml", "--params", params_text(tmp_path, old, new), "--out", out)
    refused(r, "dvc-yaml", needle, nothing_at=[out])


@pytest.mark.parametrize("name, needle", [
    ("../vae_ch160v4096z32.pth", "profiles.paper.fetch.files.0: '../vae_ch160v4096z32.pth' is not a plain file name"),
    ("sub/vae_ch160v4096z32.pth", "profiles.paper.fetch.files.0: 'sub/vae_ch160v4096z32.pth' is not a plain file name"),
])
def test_paper_fetch_files_stay_in_the_output_folder(tmp_path, name, needle):
    params = params_text(tmp_path, "files: [vae_ch160v4096z32.pth", f"files: [{name}")
    params.write_text(params.read_text().replace("root: null", "root: /imagenet/train"))
    out = tmp_path / "dvc.yaml"
    refused(variant("dvc-yaml", "--params", params, "--profile", "paper", "--out", out), "dvc-yaml", needle,
            nothing_at=[out])


def test_a_stage_stops_on_bad_params_before_reading_its_inputs(ref, tmp_path):  # noqa: F811
    params = params_text(tmp_path, "lr: 3.0e-4,", "lr: .nan,")
    r = variant(*evaluate_args(ref, tmp_path, tmp_path / "missing.npz", params=params))
    refused(r, "evaluate", "profiles.tiny.train.optimizer.lr: nan is not a finite number",
            nothing_at=[tmp_path / "row.parquet"])
