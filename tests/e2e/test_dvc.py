"""DVC over the tiny profile: one table reproduced, staleness by params, push and pull."""
import hashlib
import re
import subprocess
import sys

import pytest
import yaml

from pipeline_utils import ROOT, copy_repo, run
from variant import dag
from variant.config import load_params

P = load_params(profile="tiny")


def test_dvc_yaml_is_generated_from_the_dag():
    r = subprocess.run([sys.executable, "-m", "variant.cli", "dvc-yaml", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {f"train_{r}" for r in dag.trained_runs(P)} <= set(stages)
    assert {"table1", "table2", "table3", "table4", "table5", "table7", "table8", "pareto"} <= set(stages)
    train = stages["train_progressive_d4"]
    assert train["outs"][0] == "artifacts/tiny/checkpoints/progressive_d4.pth"      # cached
    assert train["outs"][1] == {"results/tiny/train/progressive_d4.parquet": {"cache": False}}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_repro_table2_status_push_pull(tmp_path):
    work = copy_repo(tmp_path / "repo", git=True)
    first = ran(run(["dvc", "repro", "table2"], work, timeout=3000).stdout)
    needed = {"table2", "profiling", "pretrained", "tokens", "data", "feature_extractor"} | {
        f"train_progressive_d{d}" for d in P["train"]["subnet_depths"]}
    assert needed <= first
    assert not any(s.startswith(("train_fixed", "train_skipall")) or s in ("pareto", "table1") for s in first)

    assert ran(run(["dvc", "repro", "table2"], work).stdout) == set()             # up to date
    status = ["dvc", "status", "--with-deps", "table2"]                              # upstream stages too
    assert "up to date" in run(status, work).stdout

    # A parameter Table 2 does not read (Figure 2a's grid) leaves it up to date ...
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["profiles"]["tiny"]["train"]["fixed_ratios"]["p"] = [0.2, 0.6, 0.8]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([sys.executable, "-m", "variant.cli", "dvc-yaml"], work)
    assert "up to date" in run(status, work).stdout
    # ... one it reads (the guidance scale of every sample) makes it stale.
    params["profiles"]["tiny"]["sample"]["cfg"] = 2.0
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = run(status, work).stdout
    assert "modified:" in stale and "profiles.tiny.sample.cfg" in stale
    assert "metrics_progressive_d4_d4_N6" in stale and "train_progressive_d4" not in stale
    params["profiles"]["tiny"]["sample"]["cfg"] = P["sample"]["cfg"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # Checkpoints round-trip through the remote, and repro then trains nothing.
    ckpt = work / "artifacts/tiny/checkpoints/progressive_d4.pth"
    before = sha256(ckpt)
    run(["dvc", "push"], work)
    ckpt.unlink()
    run(["dvc", "pull", "train_progressive_d4"], work)
    assert sha256(ckpt) == before
    assert ran(run(["dvc", "repro", "table2"], work).stdout) == set()
