"""`variant verify-golden` as a user runs it."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import GOLDEN, GOLDEN_SETS


def variant(*args):
    return subprocess.run([sys.executable, "-m", "variant.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("golden", GOLDEN_SETS, ids=lambda p: p.name)
def test_verify_golden_passes_on_the_reference_vectors(golden):
    """Every check of config.json's subnets: 5 before the subnets, then for each 5 of the
    reference sampler and 4 of the lean one (its cache differs by design)."""
    subnets = json.loads((golden / "config.json").read_text())["subnets"]
    r = variant("verify-golden", str(golden))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{5 + 9 * len(subnets)} passed, 0 failed" in r.stdout
    d, n = subnets[-1]
    assert f"d={d} N={n} sampled tokens" in r.stdout and f"lean d={d} N={n} sampled tokens" in r.stdout


def test_verify_golden_fails_on_a_planted_difference(tmp_path):
    bad = tmp_path / "golden"
    shutil.copytree(GOLDEN, bad)
    vec = torch.load(bad / "vectors.pth", weights_only=False)
    vec["infer"]["d2_N2"]["tokens"][3][0, 0] += 1
    vec["teacher_forced_logits"][0, 0, 0] += 1e-3
    torch.save(vec, bad / "vectors.pth")
    r = variant("verify-golden", str(bad))
    assert r.returncode == 1
    failed = [line for line in r.stdout.splitlines() if line.endswith("FAIL")]
    assert [line.split("  ")[0] for line in failed] == ["teacher-forced logits", "d=2 N=2 sampled tokens",
                                                        "lean d=2 N=2 sampled tokens"]


def test_verify_golden_names_a_missing_directory(tmp_path):
    r = variant("verify-golden", str(tmp_path / "none"))
    assert r.returncode == 2
    assert "not a golden directory, missing config.json" in r.stderr
    assert "Traceback" not in r.stderr


def test_version_through_the_command_and_python_m():
    from variant import __version__
    for cmd in ([sys.executable, "-m", "variant.cli", "--version"], [sys.executable, "-m", "variant", "--version"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == f"variant {__version__}", r.stderr


def test_snakemake_config_keys_are_validated(tmp_path):
    """A misspelt --config key stops the run naming it, instead of running the default profile."""
    import shutil as sh
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    snakemake = sh.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    r = subprocess.run([snakemake, "-n", "all", "--config", "profil=paper"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "profil" in r.stdout + r.stderr and "was unexpected" in r.stdout + r.stderr
