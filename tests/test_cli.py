"""`variant verify-golden` as a user runs it."""
import shutil
import subprocess
import sys

import torch

from conftest import GOLDEN


def variant(*args):
    return subprocess.run([sys.executable, "-m", "variant.cli", *args], capture_output=True, text=True)


def test_verify_golden_passes_on_the_reference_vectors():
    r = variant("verify-golden", str(GOLDEN))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "20 passed, 0 failed" in r.stdout
    assert "d=2 N=3 sampled tokens" in r.stdout


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
    assert [line.split("  ")[0] for line in failed] == ["teacher-forced logits", "d=2 N=2 sampled tokens"]


def test_verify_golden_names_a_missing_directory(tmp_path):
    r = variant("verify-golden", str(tmp_path / "none"))
    assert r.returncode == 2
    assert "not a golden directory, missing config.json" in r.stderr
    assert "Traceback" not in r.stderr
