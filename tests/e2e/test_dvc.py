"""DVC over the tiny profile: one table reproduced, staleness by params, push and pull."""
import csv
import hashlib
import re
import subprocess
import sys

import pytest
import yaml

from pipeline_utils import ROOT, copy_repo, run
from variant import dag, dvcgen
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

    # An experiment on a params key reruns only the stages that read it, and is listed
    # with its value; the workspace's params.yaml is left as it was.
    out = run(["dvc", "exp", "run", "-S", "profiles.tiny.profiling.repeats=3", "table2"], work).stdout
    assert ran(out) == {"profiling", "table2"}
    rows = list(csv.reader(run(["dvc", "exp", "show", "--no-pager", "--csv"], work).stdout.splitlines()))
    col = next(i for i, name in enumerate(rows[0]) if name.endswith("profiles.tiny.profiling.repeats"))
    assert {r[col] for r in rows[1:]} >= {str(P["profiling"]["repeats"]), "3"}   # workspace and experiment


def table2_stages() -> set[str]:
    """The DVC stages behind Table 2 on a clone with no outputs yet."""
    P_runs = dag.report_runs(P, "table2")
    metrics = {dvcgen.stage_name("metrics", r, c) for r, cfgs in P_runs.items() for c in cfgs}
    trains = {dvcgen.stage_name("train", r) for r in P_runs if r != "pretrained"}
    return {"data", "pretrained", "feature_extractor", "reference_stats", "tokens", "profiling", "table2"} \
        | metrics | trains


def test_dry_repro_and_exp_run_plan_table2_on_a_fresh_clone(tmp_path):
    work = copy_repo(tmp_path / "repo", git=True)
    # DVC's dry run hashes each stage's dependencies before printing it, so on a clone
    # without outputs it stops at the first one an upstream stage would make
    # (treeverse/dvc#9021). --force skips that check; on a fresh clone every stage runs anyway.
    planned = ran(run(["dvc", "repro", "--dry", "--force", "table2"], work).stdout)
    assert planned == table2_stages()
    # an experiment over a params key: planned, and the workspace left as it was
    before = (work / "params.yaml").read_text()
    out = run(["dvc", "exp", "run", "--dry", "--force", "-S", "profiles.tiny.sample.cfg=2.0", "table2"], work).stdout
    assert ran(out) == table2_stages()
    assert (work / "params.yaml").read_text() == before
    assert "--cores all" in out and "--cores 2" not in out


def test_metrics_and_plots_point_at_files_the_dag_owns():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert doc["metrics"] == [dag.metrics_json(P)]
    assert {next(iter(p)) for p in doc["plots"]} == set(dag.plots(P))
    collect = doc["stages"]["collect"]
    assert {dag.metrics_json(P): {"cache": False}} in collect["outs"]
    assert all(d.startswith("results/tiny/metrics/") for d in collect["deps"] if d.endswith(".parquet"))
    assert "src/variant/training" in doc["stages"]["train_progressive_d4"]["deps"]   # code deps per stage
