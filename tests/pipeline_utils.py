"""Helpers for the end-to-end tests: a throw-away copy of the repository to run in."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)   # snakemake, dvc and variant live beside python


def env() -> dict:
    e = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), DVC_NO_ANALYTICS="1",
             OMP_NUM_THREADS="1")
    e.pop("VARIANT_PROFILE", None)
    return e


def copy_repo(dest: Path, git: bool = False) -> Path:
    """The files git knows (tracked, and untracked but not ignored): what a clone would hold
    plus local edits. With git=True the copy is its own repository with one commit."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_symlink():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest / f)
        elif src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    if git:
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
            subprocess.run(cmd, cwd=dest, check=True)
    return dest


def run(cmd: list[str], cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def job_counts(dry_run_output: str) -> dict[str, int]:
    """{rule: jobs} from the `Job stats` table of a Snakemake dry run."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("Job stats"):
            in_table, counts = True, {}
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] == "total":
                    in_table = False
                else:
                    counts[parts[0]] = int(parts[1])
    return counts
