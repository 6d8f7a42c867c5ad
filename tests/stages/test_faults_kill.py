"""SIGKILL in the middle of a stage: `variant train`, `sample`, `tokenize` and `evaluate`.

Each test runs the stage once uninterrupted, then, in a fresh directory, starts the same
command, kills it with SIGKILL once it has written part of its work, and runs it again to
the end. The rerun must leave exactly the uninterrupted run's files (same names, same
sha256), no temporary (`.NAME.*`, variant.util.atomic), and must not redo work the stage
promises to keep (sample: finished shards; tokenize: finished token shards; train: it
resumes from its saved state).

Two ways to pick the kill point:
  - poll for a file that shows progress (the first state.pt, shard, token shard) and kill
    as soon as it appears; the process must still be running then, or the stage is too
    fast for the test and its params must make it slower;
  - "during the write" of an output: the command runs through PAUSE_IN_WRITE, which is
    `variant` with one pause added: after the n-th write of a file name has filled its
    temporary, before the rename. The kill then lands exactly between the two.
"""
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_faults_inputs import evaluate_args, params_with
from test_faults_train import write_params
from test_reference import ref  # noqa: F401  (fixture: extractor, reference stats, 50 samples)
from test_sample_stage import setup as sample_setup  # noqa: F401  (fixture: small VAR/VQVAE, params)
from test_train import ROOT, setup as train_setup  # noqa: F401  (fixture: images, VAR/VQVAE, tokens)
from variant.util.atomic import temporaries
from variant.util.hashing import sha256_file
from variant.config import load_params

# SIGKILLs real stage processes and reruns them: a minute and a half, so `slow`; the in-process
# fixtures are tiny models (one thread)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# one thread (tiny models, 2 shared cores); a fixed commit, since README.md may be edited
# while the tests run and git_commit() would flip to -dirty between two runs' provenance
ENV = {k: v for k, v in os.environ.items() if k != "VARIANT_PROFILE"} | {
    "OMP_NUM_THREADS": "1", "VARIANT_GIT_COMMIT": "kill-test"}

PAUSE_IN_WRITE = r"""
import contextlib, os, sys, time
import variant.util.atomic as atomic
name, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
real, seen = atomic.atomic_path, [0]

@contextlib.contextmanager
def atomic_path(path, *a, **k):
    with real(path, *a, **k) as tmp:
        yield tmp
        if os.path.basename(path) == name:
            seen[0] += 1
            if seen[0] == nth:   # the temporary is written in full, the target not yet replaced
                print(f"paused in the write of {path}", flush=True)
                time.sleep(600)

atomic.atomic_path = atomic_path   # before variant.cli imports the stage
from variant.cli import main
sys.exit(main(argv))
"""


def variant(args, cwd=ROOT) -> str:
    """Run `variant ARGS` to the end; its stdout and stderr."""
    r = subprocess.run([sys.executable, "-m", "variant.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def kill_at(args, transcript: Path, ready=None, pause=None, timeout=120) -> str:
    """Start `variant ARGS`, SIGKILL it once `ready()` is true (or, with pause=(name, n),
    once it sits in the n-th write of `name`); its output up to the kill."""
    args = list(map(str, args))
    cmd = [sys.executable, "-m", "variant.cli", *args] if pause is None else \
        [sys.executable, "-c", PAUSE_IN_WRITE, pause[0], str(pause[1]), *args]
    if pause is not None:
        ready = lambda: "paused in the write of" in transcript.read_text()  # noqa: E731
    with open(transcript, "w") as out:   # a file, not a pipe: a full pipe would stall the stage
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if p.poll() is not None:
                pytest.fail(f"the stage ended (rc {p.returncode}) before its kill point; make it slower "
                            f"through its params:\n{transcript.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no kill point within {timeout}s:\n{transcript.read_text()}")
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL, \
        f"finished (rc {p.returncode}) before the kill landed; make the stage slower:\n{transcript.read_text()}"
    return transcript.read_text()


def digest(path: Path) -> str:
    if path.name == "log.parquet":
        # train's per-step log: tokens_per_s is a measured throughput, never equal in two
        # runs; every other column (loss, draws, provenance, checkpoint sha256) must be
        df = pd.read_parquet(path)
        assert (df["tokens_per_s"] > 0).all()
        df = df.drop(columns="tokens_per_s")
        rows = pd.util.hash_pandas_object(df, index=True).values.tobytes()
        return hashlib.sha256(repr(list(df.columns)).encode() + rows).hexdigest()
    return sha256_file(path)


def digests(root: Path) -> dict[str, str]:
    """{path under root: sha256} of every file, hidden ones (temporaries) included."""
    return {p.relative_to(root).as_posix(): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_outputs(root: Path, uninterrupted: dict[str, str]):
    """The uninterrupted run's files, byte for byte, and nothing else: no temporary of an
    output, nor any other hidden file (one of a target that is gone, as the spent state)."""
    left = sorted({t for name in uninterrupted for t in temporaries(root / name)} | set(root.rglob(".*")))
    assert not left, f"temporaries left behind: {left}"
    assert digests(root) == uninterrupted


def stamps(paths) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each file: an atomic rewrite gives a new inode."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


# ---- train -----------------------------------------------------------------------------------

TOTAL = 15   # 3 epochs (phases 1/1/1) x 5 steps of 8 of the 40 images; a state every 5 steps


@pytest.fixture(scope="module")
def train_run(train_setup, tmp_path_factory):  # noqa: F811
    """The params, the command for an output directory, and the uninterrupted run's files."""
    d = tmp_path_factory.mktemp("train-kill")
    params = write_params(d / "params.yaml", checkpoint_every=5, phases={2: [1, 1, 1], 4: [1, 1, 1]})

    def args(out_dir):
        return ["train", "--profile", "tiny", "--params", params, "--run", "progressive_d4",
                "--init", train_setup / "var.pth", "--vae", train_setup / "vae.pth",
                "--tokens", train_setup / "tokens", "--out", out_dir / "final.pth",
                "--log", out_dir / "log.parquet", "--device", "cpu", "--no-compile"]
    variant(args(d / "uninterrupted"))
    return args, digests(d / "uninterrupted")


@pytest.mark.fault
@pytest.mark.parametrize("point", ["first-state", "final-checkpoint", "final-log"])
def test_train_killed_resumes_to_the_same_checkpoint(train_run, tmp_path, point):
    args, uninterrupted = train_run
    assert sorted(uninterrupted) == ["final.pth", "log.parquet"]   # the state is removed at the end
    out = tmp_path / "run"
    state = out / "state" / "state.pt"
    if point == "first-state":          # mid-run: right after the first state save (step 5)
        kill_at(args(out), tmp_path / "killed.txt", ready=state.exists)
        assert not (out / "final.pth").exists()
    elif point == "final-checkpoint":   # the last step done and saved, final.pth half-published
        kill_at(args(out), tmp_path / "killed.txt", pause=("final.pth", 1))
        assert temporaries(out / "final.pth") and not (out / "final.pth").exists()
    else:                               # final.pth in place, the log's last write (after 3 at states) cut
        kill_at(args(out), tmp_path / "killed.txt", pause=("log.parquet", TOTAL // 5 + 1))
        assert (out / "final.pth").is_file() and temporaries(out / "log.parquet")
    assert state.is_file()
    said = variant(args(out))
    m = re.search(rf"resumed progressive_d4 at step (\d+)/{TOTAL} ", said)
    assert m, said                      # resumed from the state, not trained afresh
    step = int(m.group(1))
    # killed at the first state: resumed from it (or the next, if one was saved before the
    # kill landed); killed in a final write: every step was done, none is trained again
    assert step in ((5, 10) if point == "first-state" else (TOTAL,)), said
    assert_same_outputs(out, uninterrupted)


# ---- sample ----------------------------------------------------------------------------------

def params_file(P: dict, path: Path) -> Path:
    """A params file whose active profile is P (a load_params result), for the CLI."""
    body = {k: v for k, v in P.items() if k not in ("profile", "config_hash")}
    path.write_text(yaml.safe_dump({"profile": P["profile"], "profiles": {P["profile"]: body}}))
    assert load_params(path)["config_hash"] == P["config_hash"]   # the same profile, read back
    return path


@pytest.mark.fault
@pytest.mark.parametrize("point", ["first-shard", "pack"])
def test_sample_killed_keeps_its_shards_and_packs_the_same_file(sample_setup, point):  # noqa: F811
    P, tmp = sample_setup                  # 15 images of d2_N2 in 4 shards of 4, one job
    params = params_file(P, tmp / "params.yaml")

    def args(root):
        return ["sample", "--params", params, "--var", tmp / "var.pth", "--vae", tmp / "vae.pth",
                "--config", "d2_N2", "--out", root / "d2_N2.npz", "--device", "cpu"]
    variant(args(tmp / "uninterrupted"))
    uninterrupted = digests(tmp / "uninterrupted")
    assert len([k for k in uninterrupted if k.startswith("d2_N2/shard-")]) == 4

    out = tmp / "killed"
    if point == "first-shard":         # kill once the first shard is on disk
        kill_at(args(out), tmp / "killed.txt", ready=(out / "d2_N2" / "shard-00000.npz").exists)
    else:                              # every shard done, the packed file half-published
        kill_at(args(out), tmp / "killed.txt", pause=("d2_N2.npz", 1))
        assert temporaries(out / "d2_N2.npz")
    assert not (out / "d2_N2.npz").exists()
    done = stamps(sorted((out / "d2_N2").glob("shard-*.npz")))
    assert done and (len(done) < 4 or point == "pack")
    variant(args(out))
    assert_same_outputs(out, uninterrupted)
    # shards on disk before the kill were checked and kept, not regenerated
    assert {k: v for k, v in stamps(sorted((out / "d2_N2").glob("shard-*.npz"))).items() if k in done} == done


# ---- tokenize --------------------------------------------------------------------------------

@pytest.mark.fault
@pytest.mark.parametrize("point", ["first-shard", "index"])
def test_tokenize_killed_skips_finished_shards_and_writes_the_same_set(train_setup, tmp_path, point):  # noqa: F811
    params = params_with(tmp_path, {"model.patch_nums": [1, 2, 3, 4, 5], "data.image_size": 10,
                                    "train.bridge": 3, "sample.bridges": [3]})

    def args(out):                      # 40 images in 5 shards of 8; no decoding worker to orphan
        return ["tokenize", "--params", params, "--vae", train_setup / "vae.pth", "--data", train_setup / "images",
                "--out", out, "--shard-size", 8, "--batch-size", 8, "--workers", 0, "--device", "cpu"]
    variant(args(tmp_path / "uninterrupted"))
    uninterrupted = digests(tmp_path / "uninterrupted")
    assert sorted(uninterrupted) == ["index.json"] + [f"shard-{s:05d}.pt" for s in range(5)]

    out = tmp_path / "killed"
    if point == "first-shard":          # kill once the first token shard is on disk
        kill_at(args(out), tmp_path / "killed.txt", ready=(out / "shard-00000.pt").exists)
    else:                               # every shard done, index.json (written last) half-published
        kill_at(args(out), tmp_path / "killed.txt", pause=("index.json", 1))
        assert temporaries(out / "index.json")
    assert not (out / "index.json").exists()
    done = stamps(sorted(out.glob("shard-*.pt")))
    assert done and (len(done) < 5 or point == "index")
    said = variant(args(out))
    assert f"{len(done)} of 5 shards already done, skipped" in said, said
    assert_same_outputs(out, uninterrupted)
    assert {k: v for k, v in stamps(sorted(out.glob("shard-*.pt"))).items() if k in done} == done


# ---- evaluate --------------------------------------------------------------------------------

@pytest.mark.fault
def test_evaluate_killed_in_its_write_reruns_to_the_same_row(ref, tmp_path):  # noqa: F811
    """evaluate writes one row at the end and prints nothing before: the one point where a
    kill can leave anything is the row's write, so it is killed there."""
    for d in ("uninterrupted", "killed"):           # evaluate_args writes its params.yaml there
        (tmp_path / d).mkdir()
    variant(evaluate_args(ref, tmp_path / "uninterrupted", ref["samples"]))
    uninterrupted = digests(tmp_path / "uninterrupted")
    assert "row.parquet" in uninterrupted

    out = tmp_path / "killed"
    kill_at(evaluate_args(ref, out, ref["samples"]), tmp_path / "killed.txt", pause=("row.parquet", 1))
    assert temporaries(out / "row.parquet") and not (out / "row.parquet").exists()
    variant(evaluate_args(ref, out, ref["samples"]))
    assert_same_outputs(out, uninterrupted)            # params.yaml and the row
