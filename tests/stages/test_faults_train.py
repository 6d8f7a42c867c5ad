"""`variant train` on bad inputs, as a user runs it: each is refused with one line naming
the file or key (exit 2, nothing written), or, for a resume state that cannot be resumed,
set aside with one line while training starts afresh."""
import pandas as pd
import pytest
import torch
import yaml

from conftest import cli_main
from test_train import ROOT, run, setup  # noqa: F401  (setup: the tiny tokens and models)
from variant.models.checkpoint import read_state_dict, save_state_dict
from variant.config import load_params

pytestmark = pytest.mark.usefixtures("one_thread")


def write_params(path, **train):
    """params.yaml with the tiny profile's train section sized for the test's tiny tokens:
    one epoch of 5 steps, a checkpoint every 2."""
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["profiles"]["tiny"]["train"] |= {"bridge": 3, "batch_size": 8, "checkpoint_every": 2,
                                         "phases": {2: [1, 0, 0], 4: [1, 0, 0]}} | train
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def params(tmp_path):
    return write_params(tmp_path / "params.yaml")


def variant_train(setup, out_dir, params, *extra, run_name="progressive_d4", init=None):
    args = ["train", "--profile", "tiny", "--params", str(params), "--run", run_name,
            "--init", str(init or setup / "var.pth"), "--vae", str(setup / "vae.pth"),
            "--tokens", str(setup / "tokens"), "--out", str(out_dir / "out.pth"),
            "--log", str(out_dir / "log.parquet"), *extra]
    return cli_main(*args)   # in this process: one thread (one_thread), as OMP_NUM_THREADS=1 did


def assert_refused(r, out_dir, *named):
    """Exit 2, one line naming the culprit, no traceback, and no output of any kind."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("variant train: error: "), r.stderr
    for text in named:
        assert text in lines[0], lines[0]
    assert not (out_dir / "out.pth").exists() and not (out_dir / "log.parquet").exists()
    assert not (out_dir / "state").exists()


def assert_set_aside(r, out_dir, aside, why):
    """Trained afresh to the end (exit 0), saying once why the state was set aside."""
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    said = [line for line in r.stdout.splitlines() if "set aside" in line]
    assert len(said) == 1 and why in said[0] and f"set aside as {aside}" in said[0], r.stdout
    log = pd.read_parquet(out_dir / "log.parquet")
    assert log["step"].tolist() == list(range(5)) and (out_dir / "out.pth").is_file()
    assert [f.name for f in (out_dir / "state").iterdir()] == [aside]   # kept, the spent state removed


class Payload:
    """Unpickling this creates `marker`: what a crafted state.pt could do, with code instead."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.fault
def test_a_crafted_pickle_state_is_never_run(setup, tmp_path, params):
    state = tmp_path / "state" / "state.pt"
    state.parent.mkdir()
    torch.save({"ident": Payload(tmp_path / "owned"), "step": 0}, state)
    torch.save({"ident": Payload(tmp_path / "armed")}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)     # the payload works when unpickled
    assert (tmp_path / "armed").exists()
    r = variant_train(setup, tmp_path, params)
    assert not (tmp_path / "owned").exists()
    assert_set_aside(r, tmp_path, "state.pt.corrupt", "objects other than tensors and plain values")


@pytest.mark.fault
def test_a_stale_state_is_set_aside_and_training_starts_afresh(setup, tmp_path, params):
    before = write_params(tmp_path / "before.yaml", seed=1)
    old = load_params(before, "tiny")
    assert not run(setup, tmp_path, cfg=old, phases=None, stop_after=3)["finished"]   # state saved at 3
    r = variant_train(setup, tmp_path, params)     # params edited since: another config hash
    assert_set_aside(r, tmp_path, f"state.pt.stale-{old['config_hash']}", "saved for another run (config_hash differ)")
    log = pd.read_parquet(tmp_path / "log.parquet")
    assert (log["config_hash"] == load_params(params, "tiny")["config_hash"]).all()


@pytest.mark.fault
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_state_is_set_aside(setup, tmp_path, params, damage):
    cfg = load_params(params, "tiny")
    run(setup, tmp_path, cfg=cfg, phases=None, stop_after=3)
    state = tmp_path / "state" / "state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    r = variant_train(setup, tmp_path, params)
    assert_set_aside(r, tmp_path, "state.pt.corrupt",
                     "failed finding central directory" if damage == "truncated" else "the file is empty")


@pytest.mark.fault
def test_a_run_of_a_depth_without_phases_names_the_valid_runs(setup, tmp_path, params):
    r = variant_train(setup, tmp_path, params, run_name="progressive_d9")
    assert_refused(r, tmp_path, "params.yaml: profiles.tiny.train.phases", "progressive_d9",
                   "valid runs: progressive_d2, progressive_d4")


@pytest.mark.fault
@pytest.mark.parametrize("phases, override, named", [
    ({4: [1, -1, 1]}, None, ["params.yaml: profiles.tiny.train.phases.4.1: -1 is less than the minimum of 0"]),
    ({4: [0, 0, 0]}, None, ["params.yaml: profiles.tiny.train.phases.4: ", "[0, 0, 0] train", "no epoch"]),
    (None, ["1", "-1", "1"], ["--epochs-override: phase 2 has -1 epochs"]),
    (None, ["0", "0", "0"], ["--epochs-override: phases [0, 0, 0] train no epoch"]),
], ids=["params-negative", "params-zero", "override-negative", "override-zero"])
def test_phases_without_an_epoch_to_train_are_refused(setup, tmp_path, phases, override, named):
    params = write_params(tmp_path / "params.yaml", **({"phases": {2: [1, 0, 0]} | phases} if phases else {}))
    r = variant_train(setup, tmp_path, params, *(["--epochs-override", *override] if override else []))
    assert_refused(r, tmp_path, *named)


@pytest.mark.fault
@pytest.mark.parametrize("micro", ["0", "-2"])
def test_a_non_positive_micro_batch_is_refused(setup, tmp_path, params, micro):
    r = variant_train(setup, tmp_path, params, "--micro-batch", micro)
    assert_refused(r, tmp_path, f"--micro-batch: {micro} is not a positive number")


@pytest.mark.fault
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_initial_weights_are_refused(setup, tmp_path, params, value):
    sd = read_state_dict(setup / "var.pth")
    sd["blocks.1.attn.proj.weight"][0, 0] = value
    save_state_dict(sd, tmp_path / "bad.pth")
    r = variant_train(setup, tmp_path, params, init=tmp_path / "bad.pth")
    assert_refused(r, tmp_path, "bad.pth: tensor 'blocks.1.attn.proj.weight' holds NaN or infinite values")


@pytest.mark.fault
def test_the_attention_mask_may_hold_minus_infinity_but_not_nan(setup, tmp_path):
    """-inf is the block-causal mask's meaning (every VAR file holds it); NaN there is damage."""
    from variant.models.checkpoint import CheckpointError
    sd = read_state_dict(setup / "var.pth")
    assert sd["attn_bias_for_masking"].isinf().any()
    sd["attn_bias_for_masking"][0, 0, 0, 0] = float("nan")
    save_state_dict(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth: tensor 'attn_bias_for_masking' holds NaN"):
        read_state_dict(tmp_path / "bad.pth")


def test_the_resume_state_is_written_without_zip_checksums_and_checkpoints_with_them(setup, tmp_path):
    """A d30 state is 24 GB and torch's CRC32 runs at a few hundred MB/s: the state goes
    without (it still loads), the published checkpoint keeps them for other tools."""
    import zipfile
    cfg = load_params(write_params(tmp_path / "p.yaml"), "tiny")
    assert not run(setup, tmp_path, cfg=cfg, phases=None, stop_after=3)["finished"]
    state = tmp_path / "state" / "state.pt"
    with zipfile.ZipFile(state) as z:
        data = [i for i in z.infolist() if "/data/" in i.filename]
        assert data and all(i.CRC == 0 for i in data)
    assert torch.load(state, weights_only=True)["step"] == 3
    assert run(setup, tmp_path, cfg=cfg, phases=None, resume=True)["finished"]   # resumes from it
    with zipfile.ZipFile(tmp_path / "final.pth") as z:
        data = [i for i in z.infolist() if "/data/" in i.filename]
        assert data and all(i.CRC != 0 for i in data)
        assert z.testzip() is None


@pytest.mark.fault
def test_a_state_save_cut_short_is_removed_when_the_run_starts(setup, tmp_path):
    """SIGKILL during a state save leaves its temporary (24 GB at d30) beside the state; a
    run with no periodic save before its end would keep it to the end and fill the disk."""
    from variant.stages.train import TrainOptions, TrainPaths, train
    from variant.training.params import TrainParams
    cfg = load_params(write_params(tmp_path / "p.yaml", checkpoint_every=1000), "tiny")
    partial = tmp_path / "state" / ".state.pt.k1ll3d.tmp"
    partial.parent.mkdir()
    partial.write_bytes(b"\0" * 4096)
    seen, said = [], []
    paths = TrainPaths(setup / "var.pth", setup / "vae.pth", setup / "tokens", tmp_path / "final.pth",
                       tmp_path / "log.parquet")
    result = train(TrainParams.from_config(cfg), "progressive_d4", paths, TrainOptions(phases=None),
                   echo=said.append, stop_flag=lambda: seen.append(partial.exists()) or False)
    assert result["finished"] and seen and not any(seen)   # gone before the first step ended
    assert sum("a state save cut short" in line and partial.name in line for line in said) == 1
