"""Faults in the Snakemake layer: values reaching a shell, and files Snakemake would delete.

Each test runs Snakemake on a throw-away copy of the repository. Real jobs run against a
stub `variant` on PATH (it records its argv and makes the outputs), so they take seconds
and need neither ImageNet nor the network.
"""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_utils import copy_repo, env

pytestmark = pytest.mark.fault

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PRE = "artifacts/paper/pretrained"
REF_BATCH = f"{PRE}/VIRTUAL_imagenet256_labeled.npz"
TOKENS = "artifacts/paper/tokens/train/index.json"

STUB = """\
#!{python}
# A stand-in for the `variant` CLI: records argv, makes the outputs the rule expects.
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
def opt(name):
    return args[args.index(name) + 1]
if args[0] == "fetch":
    out = Path(opt("--out-dir"))
    seen = {{p.name: p.read_bytes().decode() for p in out.glob("*") if p.is_file()}}
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps({{"fetch_saw": seen}}) + "\\n")
    if os.environ.get("STUB_FAIL"):
        sys.exit("stub fetch: failing on purpose")
    for name in ("var.pth", "vae.pth"):
        (out / name).write_text("linked")
elif args[0] == "tokenize":
    out = Path(opt("--out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text("{{}}")
"""


@pytest.fixture
def repo(tmp_path):
    dest = tmp_path / "repo"
    dest.mkdir()
    copy_repo(dest)
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir()
    stub = stub_dir / "variant"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    return dest


def snakemake(repo: Path, *args, stub: bool = False, check: bool = True, **extra_env):
    e = env()
    if stub:   # the stub `variant` first on PATH: jobs run in seconds
        e["PATH"] = str(repo.parent / "stub") + ":" + e["PATH"]
        e["STUB_LOG"] = str(repo.parent / "stub.log")
    e.update(extra_env)
    r = subprocess.run([SNAKEMAKE, *args], cwd=repo, env=e, capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def shell_commands(output: str) -> list[list[str]]:
    """Every command a `--printshellcmds` dry run prints, split as a shell would."""
    return [shlex.split(line.removeprefix("Shell command: "))
            for line in output.splitlines() if line.startswith("Shell command: ")]


def stub_calls(repo: Path) -> list:
    log = repo.parent / "stub.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def hostile(tmp_path, name="MARKER"):
    """A data root that runs `touch` if any shell reads it unquoted; with a space too."""
    return f"{tmp_path}/image net$(touch {tmp_path}/{name})`touch {tmp_path}/{name}2`;touch {tmp_path}/{name}3"


def markers(tmp_path, name="MARKER"):
    return [p for p in (tmp_path / name, tmp_path / f"{name}2", tmp_path / f"{name}3") if p.exists()]


@pytest.mark.parametrize("kind", ["command substitution", "space"])
def test_dry_run_quotes_data_root_as_one_token(repo, tmp_path, kind):
    root = hostile(tmp_path) if kind != "space" else f"{tmp_path}/data sets/image net/train"
    r = snakemake(repo, "-n", "-p", "all", "--config", "profile=paper", f"data_root={root}")
    cmds = shell_commands(r.stdout)
    assert len(cmds) > 800   # the whole paper DAG was printed
    with_root = [c for c in cmds if root in c]
    assert len(with_root) == 1 and "tokenize" in with_root[0]   # the one job that gets it (torchrun's)
    tok = with_root[0]
    assert tok[tok.index("--data") + 1] == root
    for c in cmds:   # nowhere else, not even split up or half-quoted
        assert not any("image net" in t or "MARKER" in t for t in c if t != root), c
    assert not markers(tmp_path)


def test_real_job_gets_data_root_verbatim_and_no_shell_runs_it(repo, tmp_path):
    root = hostile(tmp_path)
    (repo / PRE).mkdir(parents=True)
    for name in ("var.pth", "vae.pth", REF_BATCH.rsplit("/", 1)[1]):   # fetched before: only tokenize runs
        (repo / PRE / name).write_text("x")
    # gpu=0: `variant` itself, not torchrun, starts the stub (the quoting is the same)
    r = snakemake(repo, "-c1", TOKENS, "--set-resources", "tokenize:gpu=0", "--config", "profile=paper",
                  f"data_root={root}", stub=True, check=False)
    assert not markers(tmp_path), "a shell ran the data root"
    (call,) = stub_calls(repo)
    assert call[:1] == ["tokenize"] and call[call.index("--data") + 1] == root
    assert r.returncode == 0 and (repo / TOKENS).is_file(), r.stderr[-3000:]


def test_cluster_run_refuses_a_data_root_its_command_line_would_expand(repo, tmp_path):
    """SLURM jobs get `--config data_root=...` inside `sbatch --wrap="..."`: refused up front."""
    r = snakemake(repo, "--executor", "slurm", "-j1", TOKENS, "--config", "profile=paper",
                  f"data_root={tmp_path}/x$(touch {tmp_path}/MARKER)", check=False)
    assert r.returncode != 0
    assert "data_root" in r.stderr + r.stdout and "would let a shell expand" in r.stderr + r.stdout
    assert not markers(tmp_path)


def test_paper_fetch_keeps_hand_placed_reference_and_checksum_record(repo):
    """Snakemake clears a job's outputs before it runs and after it fails. The reference
    batch put there by hand, and fetch.json (the sha256 every later fetch checks against),
    must survive a first fetch, a forced rerun and a failed one."""
    pre = repo / PRE
    pre.mkdir(parents=True)
    (pre / "VIRTUAL_imagenet256_labeled.npz").write_text("hand-placed")
    record = json.dumps({"files": {"VIRTUAL_imagenet256_labeled.npz": {"sha256": "ab"}}})
    (pre / "fetch.json").write_text(record)
    cfg = ["--config", "profile=paper", "data_root=/unused"]

    rcs = [snakemake(repo, "-c1", f"{PRE}/vae.pth", *cfg, *more, stub=True, check=False, **fail).returncode
           for more, fail in [((), {}),                                  # var/vae missing: fetch runs
                              (("--forcerun", "fetch"), {}),             # a forced rerun
                              (("--forcerun", "fetch"), {"STUB_FAIL": "1"})]]   # a failed one

    saw = [c["fetch_saw"] for c in stub_calls(repo) if isinstance(c, dict)]
    assert len(saw) == 3
    for files in saw:   # every fetch found both in place, untouched
        assert files.get("VIRTUAL_imagenet256_labeled.npz") == "hand-placed"
        assert files.get("fetch.json") == record
    assert (pre / "VIRTUAL_imagenet256_labeled.npz").read_text() == "hand-placed"
    assert (pre / "fetch.json").read_text() == record
    assert rcs[:2] == [0, 0] and rcs[2] != 0



def test_lint_is_clean_and_every_rule_has_a_conda_env(repo):
    # Snakemake's linter: a conda env per rule, no globals in shell commands, declared env
    # vars, params derived from the files they name
    r = snakemake(repo, "--lint", check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Lints for" not in out and "good condition" in out, out[-3000:]
    # --config data_root exports the env var every job reads: it is declared then
    snakemake(repo, "-n", "all", "--config", "profile=paper", "data_root=/imagenet/train")
