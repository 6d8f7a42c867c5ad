"""End to end: the SLURM profile on a real one-node SLURM started by
workflow/scripts/slurm-cluster.sh.  Needs root and apt-get (it installs
slurm-wlm and munge when missing).  About a minute on a 2-core machine with the
packages installed: ~10 s to start the cluster, ~30 s for the two jobs.
"""

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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
