"""Tokenise once, then Algorithm 1: the schedule, the draws, resume and data parallelism."""
import json
import re
import shutil
from fractions import Fraction
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from conftest import PATCH_NUMS, small_vae, small_var
from variant.models.checkpoint import read_state_dict, save_state_dict
from variant.config import load_params
from variant.tiny.data import render_image
from variant.util.hashing import sha256_file
from variant.stages.tokenize import TokenDataset, split_scales, tokenize
from variant.names import parse_run
from variant.stages.train import LOG_COLUMNS, TrainOptions, TrainPaths, train
from variant.training.params import TrainParams
from variant.training.schedule import draw_subnet, epoch_order, run_probability, subnet_probability

ROOT = Path(__file__).resolve().parents[2]
CLASSES, PER_CLASS, IMAGE = 5, 8, 10        # small_vae: last scale 5 x downsample 2 = 10 px


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny ImageFolder set, small VAR/VQVAE files, and their token shards."""
    d = tmp_path_factory.mktemp("train")
    for c in range(CLASSES):
        (d / "images" / f"{c:03d}").mkdir(parents=True)
        for i in range(PER_CLASS):
            px = render_image(c, np.random.default_rng([0, c, i]), IMAGE)
            Image.fromarray(px).save(d / "images" / f"{c:03d}" / f"{i:05d}.png")
    save_state_dict(small_var(num_classes=CLASSES), d / "var.pth")
    save_state_dict(small_vae(), d / "vae.pth")
    tokenize(d / "vae.pth", d / "images", d / "tokens", PATCH_NUMS, shard_size=16, batch_size=16,
             log=lambda *a: None)
    return d


def cfg_for(**over):
    base = {"train.bridge": 3, "train.batch_size": 8, "train.checkpoint_every": 4,
            "train.optimizer.lr": 1e-3}
    return load_params(ROOT / "params.yaml", "tiny", overrides=base | over)


def run(setup, out_dir, run_name="progressive_d4", phases=(1, 1, 1), cfg=None, echo=lambda *a: None,
        snapshot_dir=None, dvclive_dir=None, **options):
    """train() on the tiny tokens; `options` are TrainOptions' fields."""
    out_dir = Path(out_dir)
    paths = TrainPaths(setup / "var.pth", setup / "vae.pth", setup / "tokens", out_dir / "final.pth",
                       out_dir / "log.parquet", snapshot_dir=snapshot_dir, dvclive_dir=dvclive_dir)
    return train(TrainParams.from_config(cfg or cfg_for()), run_name, paths,
                 TrainOptions(phases=phases, **options), echo=echo)


# ---- the schedule ---------------------------------------------------------------------

@pytest.mark.parametrize("phases", [(5, 15, 5), (5, 15, 8), (5, 15, 12), (5, 15, 15), (1, 2, 1), (2, 3, 0), (1, 0, 2)])
def test_schedule_is_eq5_at_every_epoch(phases):
    E1, E2 = phases[0], phases[0] + phases[1]
    got = [subnet_probability(ep, E1, E2) for ep in range(sum(phases))]
    for ep, p in enumerate(got):
        n = ep + 1                                      # the paper's 1-based epoch
        want = (Fraction(1, 5) if n <= E1 else Fraction(1, 5) + Fraction(4, 5) * Fraction(n - E1, E2 - E1)
                if n <= E2 else Fraction(1))
        assert p == float(want), (ep, p, want)      # Eq. 5 exactly, rounded once
    if phases[1]:
        assert got[E2 - 1] == 1.0 and got[E1] > 0.2     # phase 2 ends at 100% (paper 6.2)
    assert all(a <= b for a, b in zip(got, got[1:]))


def test_schedule_d16_table():
    p = [round(subnet_probability(ep, 5, 20), 4) for ep in range(25)]
    assert p[:5] == [0.2] * 5 and p[20:] == [1.0] * 5
    assert p[5:8] == [0.2533, 0.3067, 0.36] and p[18:20] == [0.9467, 1.0]


def test_run_names_set_the_probability_and_bridge():
    from variant.training.schedule import run_bridge, training_run
    assert run_probability(parse_run("fixed_p0.2_d4"), 7, (5, 15, 5)) == 0.2
    assert [run_probability(parse_run("progressive_d4"), ep, (1, 2, 1)) for ep in range(4)] == \
        [0.2, subnet_probability(1, 1, 3), 1.0, 1.0]
    assert run_bridge(parse_run("skipall_d16"), 6) == 0 and run_bridge(parse_run("progressive_d16"), 6) == 6
    with pytest.raises(ValueError, match="probability 1.5 is outside 0..1"):
        training_run("fixed_p1.5_d4")
    for name in ("pretrained", "progressive_d4@e2"):   # weights, but not a training to run
        with pytest.raises(ValueError, match="is not a training"):
            training_run(name)


def test_subnet_draw_is_a_pure_function_of_seed_and_step():
    a = [draw_subnet(0, s, 0.3) for s in range(2000)]
    assert a == [draw_subnet(0, s, 0.3) for s in range(2000)]
    assert a != [draw_subnet(1, s, 0.3) for s in range(2000)]
    assert abs(np.mean(a) - 0.3) < 0.04
    assert not any(draw_subnet(0, s, 0.0) for s in range(200)) and all(draw_subnet(0, s, 1.0) for s in range(200))


# ---- tokens -------------------------------------------------------------------------

def test_tokens_match_the_vqvae_and_resume(setup):
    ds = TokenDataset(setup / "tokens")
    n = CLASSES * PER_CLASS
    assert len(ds) == 2 * n and ds.L == sum(p * p for p in PATCH_NUMS)
    assert len(ds.index["shards"]) == 3 and ds.index["vae_sha256"] == sha256_file(setup / "vae.pth")
    vae = small_vae()
    px = np.array(Image.open(setup / "images" / "001" / "00002.png"))
    x = torch.from_numpy(px).permute(2, 0, 1)[None].float() / 127.5 - 1
    img = 1 * PER_CLASS + 2
    tok, lab = ds.gather(torch.tensor([ds.sample_id(img, 0, 0), ds.sample_id(img, 0, 1)]))
    assert lab.tolist() == [1, 1]
    assert torch.equal(tok[0], torch.cat(vae.img_to_tokens(x), 1)[0])
    assert torch.equal(tok[1], torch.cat(vae.img_to_tokens(x.flip(-1)), 1)[0])
    streamed = list(ds)
    assert len(streamed) == 2 * n and torch.equal(streamed[2 * img + 1][0], tok[1]) and streamed[2 * img + 1][2]
    # the teacher-forcing input built from tokens is what the VAR sees
    assert vae.quantize.teacher_forcing_input(split_scales(tok, PATCH_NUMS)).shape == (2, ds.L - 1, 8)
    # resumable: a lost shard is redone, the others skipped, the index is the same
    idx = json.loads((setup / "tokens" / "index.json").read_text())
    (setup / "tokens" / "index.json").unlink()
    (setup / "tokens" / "shard-00001.pt").unlink()
    msgs = []
    again = tokenize(setup / "vae.pth", setup / "images", setup / "tokens", PATCH_NUMS, shard_size=16,
                     log=msgs.append)
    assert again == idx and "2 of 3 shards already done" in msgs[0]


def test_epoch_order_is_a_permutation_with_one_flip_each(setup):
    ds = TokenDataset(setup / "tokens")
    o = epoch_order(ds, 3, 0)
    assert sorted((o // 2).tolist()) == list(range(ds.num_images))      # each image once
    assert 0.2 < (o % 2).float().mean() < 0.8                           # hflip p = 0.5
    assert torch.equal(o, epoch_order(ds, 3, 0)) and not torch.equal(o, epoch_order(ds, 4, 0))
    assert sorted(epoch_order(ds, 0, 0, "both").tolist()) == list(range(len(ds)))


# ---- training -----------------------------------------------------------------------

def test_loss_falls_and_log_has_the_contract_columns(setup, tmp_path):
    r = run(setup, tmp_path, phases=(2, 4, 2))             # 8 epochs x 5 steps
    assert r["finished"] and r["step"] == 40
    log = pd.read_parquet(tmp_path / "log.parquet")
    prov = ["profile", "config_hash", "checkpoint_sha256", "git_commit", "seed", "device", "torch_version"]
    assert list(log.columns) == LOG_COLUMNS + prov
    assert log["step"].tolist() == list(range(40)) and (log["checkpoint_sha256"] == r["sha256"]).all()
    assert log["subnet_prob"].tolist() == [subnet_probability(s // 5, 2, 6) for s in range(40)]
    assert log["loss_full"].isna().tolist() == log["used_subnet"].tolist()
    assert log["loss_subnet"].notna().tolist() == log["used_subnet"].tolist()
    assert log["used_subnet"].tolist() == [draw_subnet(0, s, p) for s, p in enumerate(log["subnet_prob"])]
    assert log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean() - 0.3
    sd = read_state_dict(tmp_path / "final.pth")
    assert set(sd) == set(small_var().state_dict()) and sha256_file(tmp_path / "final.pth") == r["sha256"]


def test_interrupted_and_resumed_equals_uninterrupted(setup, tmp_path):
    # Mixup's draws and drop-path's masks must resume too; the masks are keyed by (seed,
    # step, micro-batch), so whatever the process RNG held before a run does not matter
    cfg = cfg_for(**{"train.augment.mixup_alpha": 0.2, "train.drop_path": 0.3})
    torch.manual_seed(1)
    full = run(setup, tmp_path / "a", "fixed_p0.5_d4", cfg=cfg)
    torch.manual_seed(2)
    part = run(setup, tmp_path / "b", "fixed_p0.5_d4", cfg=cfg, stop_after=6)   # between checkpoints
    assert not part["finished"] and part["step"] == 6 and not (tmp_path / "b" / "final.pth").exists()
    # tensors and plain values only: it loads without unpickling any class
    assert torch.load(tmp_path / "b" / "state" / "state.pt", weights_only=True)["step"] == 6
    torch.manual_seed(3)
    msgs = []
    rest = run(setup, tmp_path / "b", "fixed_p0.5_d4", cfg=cfg, echo=msgs.append)
    assert rest["finished"] and rest["sha256"] == full["sha256"]
    assert any(m.startswith("resumed fixed_p0.5_d4 at step 6/15") for m in msgs)   # not trained afresh
    no_drop = run(setup, tmp_path / "c", "fixed_p0.5_d4", cfg=cfg_for(**{"train.augment.mixup_alpha": 0.2}))
    assert no_drop["sha256"] != full["sha256"]          # guards the above: drop-path was on
    a, b = (pd.read_parquet(tmp_path / x / "log.parquet") for x in "ab")
    assert a["loss"].tolist() == b["loss"].tolist() and b["step"].tolist() == list(range(15))
    # a finished run leaves no state; a state of other phases is set aside, not resumed
    assert not (tmp_path / "b" / "state").exists()
    assert not run(setup, tmp_path / "b", "fixed_p0.5_d4", cfg=cfg, stop_after=6)["finished"]
    msgs = []
    again = run(setup, tmp_path / "b", "fixed_p0.5_d4", cfg=cfg, phases=(1, 1, 2), echo=msgs.append)
    assert again["finished"] and again["step"] == 20
    assert any("saved for another run (phases differ); set aside as state.pt.stale-" in m for m in msgs)
    assert [f.name for f in (tmp_path / "b" / "state").iterdir()] == [f"state.pt.stale-{cfg['config_hash']}"]


def test_snapshots_are_the_weights_at_that_epoch(setup, tmp_path):
    """Figures 2c and 7 sample from snapshots: each equals the final checkpoint of a run that
    stops after that epoch, for a fixed ratio and for the progressive schedule, and an
    interrupted run that resumes writes them identically."""
    for name, epochs in [("fixed_p0.5_d4", (1, 2)), ("progressive_d4", (1, 2))]:
        snaps = tmp_path / name / "snapshots"
        run(setup, tmp_path / name, name, phases=(1, 1, 1), snapshot_dir=snaps, snapshot_epochs=epochs)
        assert sorted(p.name for p in snaps.iterdir()) == ["e1.pth", "e2.pth"]
        for e, phases in zip(epochs, [(1, 0, 0), (1, 1, 0)]):
            short = run(setup, tmp_path / f"{name}-{e}", name, phases=phases)
            assert sha256_file(snaps / f"e{e}.pth") == short["sha256"], (name, e)
    resumed = tmp_path / "resumed"            # interrupted after epoch 1, as a pre-empted job
    part = run(setup, resumed, "progressive_d4", snapshot_dir=resumed / "s", snapshot_epochs=[1, 2], stop_after=7)
    assert not part["finished"] and not any((resumed / "s").iterdir())   # published with the final checkpoint
    shutil.rmtree(resumed / "s")              # Snakemake empties an output directory before rerunning
    run(setup, resumed, "progressive_d4", snapshot_dir=resumed / "s", snapshot_epochs=[1, 2])
    for e in (1, 2):
        assert sha256_file(resumed / "s" / f"e{e}.pth") == sha256_file(tmp_path / "progressive_d4" / "snapshots" /
                                                                      f"e{e}.pth")
    assert not (resumed / "state").exists()   # spent: removed once the outputs are written
    run(setup, resumed, "progressive_d4", snapshot_dir=resumed / "s", snapshot_epochs=[1, 2], stop_after=7)
    (resumed / "state" / "snapshots" / "e1.pth").unlink()   # the state is past epoch 1: it cannot be redone
    with pytest.raises(ValueError, match="e1.pth is missing and .*state.pt is past epoch 1"):
        run(setup, resumed, "progressive_d4", snapshot_dir=resumed / "s", snapshot_epochs=[1, 2])
    with pytest.raises(ValueError, match="snapshot epoch 4 is outside 1..3"):
        run(setup, tmp_path / "bad", "progressive_d4", snapshot_dir=tmp_path / "bad" / "s", snapshot_epochs=[4])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, setup, out_dir, overrides):
    import os
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    run(setup, out_dir, "fixed_p0.5_d4", phases=(1, 0, 0), micro_batch=4, cfg=cfg_for(**overrides))


def test_two_processes_equal_one_with_accumulation(setup, tmp_path):
    """With drop-path on: each micro-batch draws the same masks on whichever rank runs it."""
    over = {"train.drop_path": 0.3}
    one = run(setup, tmp_path / "one", "fixed_p0.5_d4", phases=(1, 0, 0), micro_batch=4,   # 1 x 4 x accum 2
              cfg=cfg_for(**over))
    # spawn, not fork: a forked child cannot run backward once the parent's autograd engine
    # has started its threads, which depends on the tests run before this one
    mp.start_processes(_ddp_worker, args=(2, _free_port(), setup, tmp_path / "two", over), nprocs=2,
                       join=True, start_method="spawn")
    a, b = read_state_dict(tmp_path / "one" / "final.pth"), read_state_dict(tmp_path / "two" / "final.pth")
    init = read_state_dict(setup / "var.pth")
    assert any(not torch.equal(a[k], init[k]) for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    la, lb = (pd.read_parquet(tmp_path / x / "log.parquet") for x in ("one", "two"))
    assert la["used_subnet"].tolist() == lb["used_subnet"].tolist() and la["used_subnet"].nunique() == 2
    np.testing.assert_allclose(lb["loss"], la["loss"], rtol=1e-5)
    assert one["finished"]


def _resume_worker(rank, world, port, setup, out_dir, stop_after):
    import os
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    said = []
    run(setup, out_dir, "progressive_d4", micro_batch=2, cfg=cfg_for(**{"train.drop_path": 0.3}),
        stop_after=stop_after, echo=said.append)
    if rank == 0:
        (Path(out_dir) / f"said-{world}.txt").write_text("\n".join(map(str, said)))


def test_a_run_stopped_on_four_processes_resumes_on_two(setup, tmp_path):
    """Stop at N = 4 after step 5 (its state saved), resume at N = 2: the same weights and log
    as one process without a stop, up to the order of the gradient sums (gloo on the CPU)."""
    one = run(setup, tmp_path / "one", "progressive_d4", micro_batch=2, cfg=cfg_for(**{"train.drop_path": 0.3}))
    out = tmp_path / "moved"
    for world, stop_after in ((4, 5), (2, None)):
        mp.start_processes(_resume_worker, args=(world, _free_port(), setup, out, stop_after), nprocs=world,
                           join=True, start_method="spawn")
        if stop_after:
            assert not (out / "final.pth").exists() and (out / "state" / "state.pt").is_file()
    assert one["finished"] and not (out / "state").exists()
    assert "resumed progressive_d4 at step 5/" in (out / "said-2.txt").read_text()
    assert "4 process(es)" in (out / "said-4.txt").read_text() and "2 process(es)" in (out / "said-2.txt").read_text()
    a, b = read_state_dict(tmp_path / "one" / "final.pth"), read_state_dict(out / "final.pth")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    la, lb = (pd.read_parquet(p / "log.parquet") for p in (tmp_path / "one", out))
    assert la["step"].tolist() == lb["step"].tolist() and la["used_subnet"].tolist() == lb["used_subnet"].tolist()
    np.testing.assert_allclose(lb["loss"], la["loss"], rtol=1e-5)


def test_cli_runs_tokenize_train_and_bench(setup, tmp_path, monkeypatch, capsys):
    from variant.cli import main
    monkeypatch.chdir(ROOT)
    rc = main(["train", "--profile", "tiny", "--run", "skipall_d4", "--init", str(setup / "var.pth"),
               "--vae", str(setup / "vae.pth"), "--tokens", str(setup / "tokens"),
               "--out", str(tmp_path / "ck.pth"), "--log", str(tmp_path / "log.parquet"),
               "--epochs-override", "0", "0", "1"])
    assert rc == 0 and (tmp_path / "ck.pth").is_file() and not (tmp_path / "state").exists()
    assert pd.read_parquet(tmp_path / "log.parquet")["used_subnet"].all()          # phase 3 only
    out = tmp_path / "bench.parquet"
    assert main(["bench", "train", "--depth", "2", "--batch-per-gpu", "2", "--dtype", "fp32",
                 "--subnet-prob", "0", "1", "--patch-nums", "1", "2", "3", "--steps", "1", "--warmup", "1",
                 "--device", "cpu", "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    required = {"gpu", "n_gpus", "depth", "batch_per_gpu", "dtype", "subnet_prob", "tokens_per_s", "mfu",
                "peak_mib", "accum", "attention", "compiled", "oom", "drop_path"}   # the columns and ours
    assert required <= set(df.columns) and len(df) == 2
    assert (df["tokens_per_s"] > 0).all()
    assert (df["drop_path"] == 0.1 * 2 / 24).all()      # default: the reference's 0.1 x depth / 24
    assert main(["bench", "train", "--depth", "2", "--batch-per-gpu", "2", "--dtype", "fp32", "--subnet-prob", "0",
                 "--patch-nums", "1", "2", "3", "--steps", "1", "--warmup", "0", "--device", "cpu",
                 "--drop-path", "0", "--out", str(out)]) == 0
    df = pd.read_parquet(out)                           # another configuration: a row of its own
    assert len(df) == 3 and sorted(df["drop_path"]) == [0.0, 0.1 * 2 / 24, 0.1 * 2 / 24]
    ref = tmp_path / "reference.parquet"   # the reference trainer's recipe measured beside ours,
    small = ["bench", "train", "--depth", "2", "--dtype", "fp32", "--subnet-prob", "0", "--patch-nums", "1", "2",
             "3", "--steps", "1", "--warmup", "0", "--device", "cpu", "--out", str(ref)]
    assert main(small + ["--batch-per-gpu", "2", "4", "--accum", "2", "1", "--reference"]) == 0
    df = pd.read_parquet(ref)      # at the first shape; 4 x 1 is the same step as 2 x 2
    assert list(zip(df["dtype"], df["batch_per_gpu"], df["accum"])) == [("fp16", 2, 2), ("fp32", 2, 2), ("fp32", 4, 1)]
    assert not df["compiled"].any() and (df["attention"] == "masked").all()
    assert df["vs_reference"].iloc[0] == 1.0
    np.testing.assert_allclose(df["vs_reference"], df["tokens_per_s"] / df["tokens_per_s"].iloc[0])
    capsys.readouterr()
    assert main(small + ["--batch-per-gpu", "2", "4", "--accum", "2", "1", "1"]) != 0
    assert "--accum takes one value or one per --batch-per-gpu (2), got 3" in capsys.readouterr().err


def test_activation_checkpointing_recomputes_the_same_drop_masks():
    """The backward's recomputation of a block redraws its drop-path masks: they must be the
    forward's (torch.utils.checkpoint restores the RNG state), or the gradients are wrong."""
    import copy

    from variant.training.step import enable_activation_checkpointing
    var, vae = small_var(drop_path_rate=0.5), small_vae()
    var.train().cond_drop_rate = 0.0
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, vae.quantize.vocab_size, (4, p * p), generator=g) for p in var.patch_nums]
    with torch.no_grad():
        x = vae.quantize.teacher_forcing_input(tokens)
    target = torch.cat(tokens, 1)
    labels = torch.tensor([0, 1, 2, 3])
    ckpt = copy.deepcopy(var)
    enable_activation_checkpointing(ckpt)
    grads = []
    for m in (var, ckpt):
        torch.manual_seed(5)
        torch.nn.functional.cross_entropy(m(labels, x, m.subnet(3, 2)).flatten(0, 1), target.flatten()).backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_progress_lines_for_a_log_without_a_terminal(setup, tmp_path):
    """A SLURM log gets step/total, loss, p, tokens/s and ETA every log_every steps."""
    lines = []
    r = run(setup, tmp_path, echo=lines.append, log_every=2)
    progress = [line for line in lines if " step " in line and "ETA" in line]
    total = r["total"]
    assert [int(line.split("step ")[1].split("/")[0]) for line in progress] == \
        sorted({*range(2, total + 1, 2), total})
    pattern = rf"progressive_d4: step \d+/{total} \(\d+%\) loss \d+\.\d{{4}} p [01]\.\d\d [\d,]+ tokens/s ETA \d\d:\d\d:\d\d"
    assert all(re.fullmatch(pattern, line) for line in progress), progress
    assert progress[-1].endswith("ETA 00:00:00")
    lines.clear()
    run(setup, tmp_path / "quiet", echo=lines.append, log_every=0)
    assert not [line for line in lines if "ETA" in line]


def test_dvclive_view_equals_the_log_also_after_a_resume(setup, tmp_path, monkeypatch):
    """--dvclive: each step's loss, p and use once, as in the log parquet, for a run
    interrupted and resumed; the run's numbers are those of a run without it."""
    pytest.importorskip("dvclive")
    plain = run(setup, tmp_path / "plain", "fixed_p0.5_d4")
    live = tmp_path / "live"
    assert not run(setup, tmp_path / "a", "fixed_p0.5_d4", dvclive_dir=live, stop_after=6)["finished"]
    r = run(setup, tmp_path / "a", "fixed_p0.5_d4", dvclive_dir=live)
    assert r["sha256"] == plain["sha256"]
    log = pd.read_parquet(tmp_path / "a" / "log.parquet")
    for name in ("loss", "subnet_prob", "used_subnet"):
        tsv = pd.read_csv(live / "plots" / "metrics" / f"{name}.tsv", sep="\t")
        assert tsv["step"].tolist() == log["step"].tolist() == list(range(r["total"]))
        np.testing.assert_allclose(tsv[name], log[name].astype(float), rtol=1e-12)
    assert json.loads((live / "metrics.json").read_text())["loss"] == pytest.approx(log["loss"].iloc[-1])
    monkeypatch.setitem(__import__("sys").modules, "dvclive", None)    # not installed
    with pytest.raises(ValueError, match="--dvclive .*: the dvclive package is not installed"):
        run(setup, tmp_path / "b", "fixed_p0.5_d4", dvclive_dir=live)


def _tokenize_worker(rank, world, port, setup, out_dir):
    import os
    from variant.training.distributed import init_distributed
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from variant.stages import tokenize as stage
    real, written = stage.torch_save, []
    stage.torch_save = lambda obj, path, **kw: written.append(Path(path).name) or real(obj, path, **kw)
    info = init_distributed("cpu")
    tokenize(setup / "vae.pth", setup / "images", out_dir, PATCH_NUMS, shard_size=16, batch_size=16,
             log=lambda *a: None, info=info)
    (out_dir.parent / f"written-by-{rank}.txt").write_text("\n".join(written))
    torch.distributed.destroy_process_group()


def test_two_tokenize_processes_write_the_files_of_one(setup, tmp_path):
    """Under torchrun each process encodes every world-th shard, the first writes the index:
    the same bytes as the one-process set (setup's)."""
    one = json.loads((setup / "tokens" / "index.json").read_text())
    assert len(one["shards"]) >= 3                       # both processes have shards to write
    (tmp_path / "two").mkdir()
    shutil.copy(setup / "tokens" / one["shards"][1]["file"], tmp_path / "two")   # one done already
    mp.start_processes(_tokenize_worker, args=(2, _free_port(), setup, tmp_path / "two"), nprocs=2,
                       join=True, start_method="spawn")
    two = json.loads((tmp_path / "two" / "index.json").read_text())
    assert two["shards"] == one["shards"]               # every shard's sha256 included
    by = [set((tmp_path / f"written-by-{r}.txt").read_text().split()) for r in (0, 1)]
    missing = {s["file"] for s in one["shards"]} - {one["shards"][1]["file"]}
    assert by[0] and by[1] and not by[0] & by[1] and by[0] | by[1] == missing   # split, none twice
    assert {k: v for k, v in two.items() if k != "data"} == {k: v for k, v in one.items() if k != "data"}


def test_a_seed_replica_trains_as_its_base_run_with_that_seed(setup, tmp_path):
    """`fixed_p0.5_d4_s3` is `fixed_p0.5_d4` with train.seed 3: the same draws, the same
    weights, its own name in the log and the provenance; another seed trains differently."""
    replica = run(setup, tmp_path / "replica", "fixed_p0.5_d4_s3")
    base = run(setup, tmp_path / "base", "fixed_p0.5_d4", cfg=cfg_for(**{"train.seed": 3}))
    seed0 = run(setup, tmp_path / "seed0", "fixed_p0.5_d4")
    assert replica["sha256"] == base["sha256"] != seed0["sha256"]
    la, lb = (pd.read_parquet(tmp_path / x / "log.parquet") for x in ("replica", "base"))
    assert la["used_subnet"].tolist() == lb["used_subnet"].tolist()
    np.testing.assert_array_equal(la["loss"], lb["loss"])
    assert (la["seed"] == 3).all() and (la["run"] == "fixed_p0.5_d4_s3").all()
