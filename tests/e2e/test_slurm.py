"""End to end: the SLURM profile on a real one-node SLURM started by
workflow/scripts/slurm-cluster.sh.  Needs root and apt-get (it installs
slurm-wlm and munge when missing).  A two-job toy workflow first, then the tiny
pipeline: `snakemake --profile slurm all`, one training as two processes through the
multi-GPU launch line, and a training cancelled mid-run that resumes when resubmitted.
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "workflow" / "scripts" / "slurm-cluster.sh"
TOY = REPO / "tests" / "data" / "slurm_toy"
# Held shared by every test session using the cluster, so one session's teardown
# does not stop it under another; its content says whether a test started it.
LOCK = Path(tempfile.gettempdir()) / "variant-slurm-test.lock"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="starts SLURM daemons and installs packages: needs root"
    ),
    pytest.mark.skipif(
        shutil.which("apt-get") is None and shutil.which("slurmctld") is None,
        reason="no apt-get to install slurm-wlm/munge (Debian/Ubuntu only)",
    ),
]


@pytest.fixture(scope="module")
def slurm_cluster(request):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    lock = open(LOCK, "a+")
    fcntl.flock(lock, fcntl.LOCK_SH)
    request.addfinalizer(lambda: _stop_if_last(lock))
    out = subprocess.run(
        ["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    if "already running" not in out.stdout:
        lock.write("started by test\n")
        lock.flush()


def _stop_if_last(lock):
    """Stop the cluster if a test started it and no other test session uses it;
    a cluster someone started by hand is left running."""
    fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return
    lock.seek(0)
    if "started by test" in lock.read():
        lock.truncate(0)  # first, so a failing stop leaves no stale marker
        subprocess.run(["bash", str(SCRIPT), "stop"], check=False, timeout=60)
    lock.close()


def _slurmctld_log() -> str:
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    m = re.search(r"^SlurmctldLogFile\s*=\s*(\S+)", conf.stdout, re.M)
    return Path(m.group(1)).read_text() if m and Path(m.group(1)).exists() else ""


def test_profile_runs_jobs_through_slurm(slurm_cluster, tmp_path):
    work = tmp_path / "toy"
    shutil.copytree(TOY, work)
    cmd = [
        sys.executable, "-m", "snakemake",
        "--profile", str(REPO / "slurm"),
        "--directory", str(work),
        "--snakefile", str(work / "Snakefile"),
        # the profile's defaults are sized for a real cluster; these fit any CI node
        "--default-resources", "slurm_partition=debug", "mem_mb=200", "runtime=10",
        "cpus_per_task=1",
        # first status poll after 5 s instead of 40 s: keeps the test short
        "--slurm-init-seconds-before-status-checks", "5",
        "all",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    ids = {}
    for name in ("first.txt", "second.txt"):
        text = (work / name).read_text().strip()
        assert text.isdigit(), f"{name} holds {text!r}, not a SLURM job id"
        ids[name] = text
    assert len(set(ids.values())) == 2, f"both rules ran in one job: {ids}"

    queue = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i"], capture_output=True, text=True
    ).stdout.split()
    log = _slurmctld_log()
    for name, job_id in ids.items():
        assert job_id in queue or re.search(rf"JobId={job_id}\b", log), (
            f"job {job_id} ({name}) unknown to SLURM"
        )


# ---------------------------------------------------------------------------------------
# The real pipeline: `snakemake --profile slurm all` on the tiny profile, then a training
# on two processes and a cancelled training resubmitted, in the same copy of the repository.

# The profile's defaults are sized for a real cluster: partition `debug` and small
# defaults fit the CPU node (the rules' own resources come from the tiny profile of
# params.yaml: 1 CPU, 2 GB, 30 min). The first status poll after 5 s instead of 40 s,
# and SLURM's per-job logs kept, as the proof that each job ran there.
SLURM_ARGS = ["--profile", "slurm",
              "--default-resources", "slurm_partition=debug", "mem_mb=1000", "runtime=30", "cpus_per_task=1",
              "--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs"]
# Rules marked `localrule: True` (cheap aggregation on the submitting host, as Snakemake
# intends); every other job must be a SLURM job.
LOCAL_RULES = re.compile(r"all|collect|findings(_table1)?|paper_check|report_\w+")   # localrule: True


def snakemake_slurm(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *SLURM_ARGS, *args]


def slurm_jobs(output: str) -> tuple[list[tuple[str, str]], dict[str, tuple[str, str]]]:
    """From the submitting Snakemake's log: the local jobs [(jobid, rule)] and the
    submitted ones {slurm id: (jobid, rule)}."""
    local, remote, rule_of, pending = [], {}, {}, None
    for line in output.splitlines():
        if m := re.match(r"^(local)?rule (\w+):$", line):
            pending = (bool(m.group(1)), m.group(2))
        elif (m := re.match(r"^\s+jobid: (\d+)$", line)) and pending:
            rule_of[m.group(1)] = pending
            if pending[0]:
                local.append((m.group(1), pending[1]))
            pending = None
        elif m := re.match(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", line):
            remote[m.group(2)] = (m.group(1), rule_of[m.group(1)][1])
    return local, remote


def slurm_state(job_id: str) -> dict[str, str]:
    """scontrol's record of a job (finished ones stay for MinJobAge, an hour here)."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_slurm(slurm_cluster, tmp_path_factory):
    from pipeline_utils import copy_repo, env, job_counts
    work = copy_repo(tmp_path_factory.mktemp("slurm_tiny"))
    dry = subprocess.run(snakemake_slurm(work, "-n", "all"), cwd=work, env=env(), capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    t0 = time.monotonic()
    run = subprocess.run(snakemake_slurm(work, "all"), cwd=work, env=env(), capture_output=True, text=True,
                         timeout=3600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    print(f"snakemake --profile slurm all (tiny): {time.monotonic() - t0:.0f} s")
    return work, job_counts(dry.stdout + dry.stderr), run.stdout + run.stderr


def test_tiny_pipeline_runs_every_job_through_sbatch(tiny_slurm):
    work, planned, output = tiny_slurm
    local, remote = slurm_jobs(output)
    ran = Counter(rule for _, rule in remote.values()) + Counter(rule for _, rule in local)
    ran.pop("all", None)
    assert dict(ran) == {r: n for r, n in planned.items() if r != "all"}, "not every planned job ran"
    assert {"fetch", "train", "sample", "evaluate", "profile"} <= {rule for _, rule in remote.values()}
    assert all(LOCAL_RULES.fullmatch(rule) for _, rule in local), f"ran outside SLURM: {local}"
    log = _slurmctld_log()
    for slurm_id, (jobid, rule) in remote.items():
        state = slurm_state(slurm_id)
        assert state.get("JobState") == "COMPLETED" or re.search(rf"JobId={slurm_id} done", log), (
            f"Snakemake job {jobid} ({rule}): SLURM job {slurm_id} did not complete in SLURM")
        assert state.get("JobState") is None or state["Comment"].startswith(f"rule_{rule}"), state
        logs = list((work / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob(f"{slurm_id}.log"))
        assert logs and f"rule {rule}:" in logs[0].read_text(), f"no SLURM log of job {slurm_id} ({rule})"
    q = pd.read_parquet(work / "results/tiny/quality.parquet")
    assert len(q) == planned["evaluate"] and (work / "results/tiny/paper_check.md").stat().st_size > 0


def test_training_on_two_processes_through_the_gpu_launch_line(tiny_slurm):
    """gpu=2, as gpu=8 on an H100 node: sbatch/srun --gpus=2, torchrun --nproc-per-node=2;
    the test node's GPU slots have no GPU, so the two ranks train on the CPU through gloo."""
    from pipeline_utils import env
    work, _, _ = tiny_slurm
    run_name = "progressive_d2"
    shutil.rmtree(work / f"artifacts/tiny/train/{run_name}", ignore_errors=True)   # no finished state to resume
    t0 = time.monotonic()
    r = subprocess.run(snakemake_slurm(work, "--set-resources", "train:gpu=2", "train:cpus_per_task=2",
                                       "--force", f"artifacts/tiny/checkpoints/{run_name}.pth"),
                       cwd=work, env=env(), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    print(f"two-process training through SLURM: {time.monotonic() - t0:.0f} s")
    _, remote = slurm_jobs(r.stdout + r.stderr)
    (slurm_id, _), = [(s, j) for s, j in remote.items() if j[1] == "train"]
    state = slurm_state(slurm_id)
    assert state["JobState"] == "COMPLETED" and "gpu:2" in state.get("TresPerJob", ""), state
    slurm_log = next((work / ".snakemake/slurm_logs/rule_train").rglob(f"{slurm_id}.log")).read_text()
    assert "torchrun --standalone --nproc-per-node=2" in slurm_log + r.stderr
    log = (work / f"logs/tiny/train/{run_name}.log").read_text()
    for rank in (0, 1):
        assert re.search(rf"^rank {rank}/2 \(local {rank}\) on \S+: gloo process group, device cpu$", log, re.M), log
    assert "2 process(es)" in log and "sha256" in log


def test_cancelled_training_resumes_to_the_same_checkpoint(tiny_slurm):
    """scancel mid-run (SIGTERM: the state is saved); Snakemake resubmits the job (the
    profile's retries), which resumes from the state and ends on the uninterrupted run's
    sha256 (the `all` run trained it start to end)."""
    from pipeline_utils import env
    work, _, _ = tiny_slurm
    run_name = "progressive_d4"
    ckpt = work / f"artifacts/tiny/checkpoints/{run_name}.pth"
    uninterrupted = sha256(ckpt)
    state = work / f"artifacts/tiny/train/{run_name}/state/state.pt"
    shutil.rmtree(state.parent.parent)
    t0 = time.monotonic()
    proc = subprocess.Popen(snakemake_slurm(work, "--force", str(ckpt.relative_to(work))), cwd=work, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = None
        while time.monotonic() - t0 < 600 and proc.poll() is None:
            if first is None:
                queue = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True,
                                       text=True).stdout
                first = next((i for i, c in (l.split(maxsplit=1) for l in queue.splitlines())
                              if c.startswith("rule_train") and run_name in c), None)
            if first and state.is_file():   # the first checkpoint (params train.checkpoint_every)
                subprocess.run(["scancel", first], check=True)
                break
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first and proc.returncode == 0, out[-5000:]
    print(f"cancelled and resubmitted training: {time.monotonic() - t0:.0f} s")
    _, remote = slurm_jobs(out)
    trains = [s for s, (_, rule) in remote.items() if rule == "train"]
    assert trains[0] == first and len(trains) == 2, trains
    assert slurm_state(first)["JobState"] == "CANCELLED" and slurm_state(trains[1])["JobState"] == "COMPLETED"
    log = (work / f"logs/tiny/train/{run_name}.log").read_text()   # the second job's
    m = re.search(rf"resumed {run_name} at step (\d+)/(\d+)", log)
    assert m and 0 < int(m.group(1)) < int(m.group(2)), log
    assert sha256(ckpt) == uninterrupted
