"""The tiny profile end to end, as a newcomer runs it: `snakemake -c2 all` on a CPU."""
import copy
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline_utils import copy_repo, env, job_counts, run
from variant import dag, names
from variant.config import load_params

pytestmark = pytest.mark.slow

P = load_params(profile="tiny")
PAPER_TABLE2_COLUMNS = ["Method", "#Steps", "Speedup", "Latency", "Mem", "KV Cache", "#Param", "FID", "IS",
                        "Prec", "Rec"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("tiny"))
    run(["snakemake", "-c2", "all"], work, timeout=3000)
    return work


def test_every_configuration_has_one_quality_row(tiny):
    q = pd.read_parquet(tiny / dag.quality(P))
    expected = {(r, c) for r, cfgs in dag.runs_and_configs(P).items() for c in cfgs}
    assert set(zip(q["run"], q["config"])) == expected and len(q) == len(expected)
    for col in ("fid", "isc_mean", "precision", "recall", "config_hash", "checkpoint_sha256", "git_commit",
                "seed", "device", "num_samples"):
        assert col in q.columns and q[col].notna().all(), col
    assert (q["num_samples"] == P["sample"]["per_class"] * P["data"]["num_classes"]).all()
    assert (q["fid"] >= 0).all() and (q["config_hash"] == P["config_hash"]).all()


def test_profiling_and_training_logs(tiny):
    prof = pd.read_parquet(tiny / dag.profiling(P))
    assert set(prof["mode"]) == set(P["profiling"]["modes"]) and set(prof["batch"]) == set(P["profiling"]["batches"])
    assert not prof["oom"].any() and (prof["latency_s"] > 0).all()
    for r in dag.trained_runs(P):
        log = pd.read_parquet(tiny / dag.train_log(P, r))
        assert {"step", "epoch", "subnet_prob", "used_subnet", "loss", "loss_full", "loss_subnet"} <= set(log.columns)
        assert log["loss"].notna().all() and len(log) > 0
        per_epoch = log.groupby("epoch")["loss"].mean()   # the short tiny training still learns
        assert per_epoch.iloc[-1] < per_epoch.iloc[0], (r, per_epoch.round(3).tolist())


def test_tables_have_the_papers_structure(tiny):
    t2 = pd.read_csv(tiny / dag.tables_dir(P) / "table2.csv")
    assert list(t2.columns)[:len(PAPER_TABLE2_COLUMNS)] == PAPER_TABLE2_COLUMNS
    assert list(t2["Method"]) == ["DiT-XL/2", "LlamaGen-XXL", "VAR-d8", "VAR-CoDe", "VARiant-d4", "VARiant-d2"]
    measured = t2[t2["Source"] == "measured"]
    assert measured[["Speedup", "KV Cache", "FID", "IS"]].notna().all().all()
    t8 = pd.read_csv(tiny / dag.tables_dir(P) / "table8.csv")
    assert len(t8) == len(P["train"]["subnet_depths"]) + 1
    t7 = pd.read_csv(tiny / dag.tables_dir(P) / "table7.csv")
    assert len(t7) == len(P["train"]["subnet_depths"])
    for name in ("table1", "table3", "table4", "table5"):
        for path in dag.report_outputs(P, name):
            assert (tiny / path).stat().st_size > 0, path


def test_figures_and_report_are_written(tiny):
    figures = [item for item, (kind, _) in dag.REPORT_ITEMS.items() if kind == "figure"] + list(dag.SAMPLE_GRIDS)
    assert len(figures) == 10
    for f in figures:
        for path in dag.report_outputs(P, f):   # PDF and PNG, per profile
            assert (tiny / path).stat().st_size > 1000, path
    pareto = pd.read_csv(tiny / dag.figure_data(P, "pareto"))   # the data beside the figure, for `dvc plots`
    assert pareto["full_fid"].notna().all() and len(pareto) == len(P["train"]["fixed_ratios"]["p"]) + 1
    check = (tiny / dag.paper_check(P)[0]).read_text()
    assert "2.97" in check and "2.67" in check          # the paper's own inconsistency is listed


def report_variable(page: str, name: str):
    """A JSON value the Snakemake report page defines as `var NAME = {...}`."""
    start = page.index(f"var {name} = {{") + len(f"var {name} = ")
    return json.JSONDecoder().raw_decode(page, start)[0]


def test_snakemake_report_holds_every_table_and_figure(tiny):
    """`snakemake --report report.html` shows each table (its CSV), figure (its PNG) and the paper
    check, under a paper section, with its caption from workflow/report/."""
    run(["snakemake", "--report", "report.html"], tiny)
    page = (tiny / "report.html").read_text()
    results, categories = report_variable(page, "results"), report_variable(page, "categories")
    section = {Path(path).name: (category, sub) for category, subs in categories.items()
               for sub, paths in subs.items() for path in paths}
    expected = [f"{item}.csv" if kind == "table" else f"{item}.png" for item, (kind, _) in dag.REPORT_ITEMS.items()]
    expected += [f"{item}.png" for item in dag.SAMPLE_GRIDS] + ["paper_check.html"]
    assert len(expected) == 7 + 10 + 1
    assert set(expected) <= set(section), sorted(set(expected) - set(section))
    assert section["table2.csv"][0] == "Sec. 4 Experiments" and section["paper_check.html"][0] == "Paper check"
    captions = {Path(path).name: r["caption"] for path, r in results.items()}
    assert all(captions[name].strip() for name in expected)
    assert "Table 5: bridge-zone ablation" in captions["table5.csv"]


def test_second_run_has_nothing_to_do(tiny):
    out = run(["snakemake", "-c2", "-n", "all"], tiny).stdout
    assert "Nothing to be done" in out


def test_reference_statistics_follow_their_input(tiny):
    """Computed once; an edited reference set reruns them and the evaluations, nothing upstream."""
    ref = tiny / "artifacts/tiny/data/eval/.snakemake_timestamp"   # Snakemake's time of a directory output
    st = ref.stat()
    os.utime(ref, (st.st_atime, st.st_mtime + 3600))
    try:
        counts = job_counts(run(["snakemake", "-c2", "-n", "all"], tiny).stdout)
    finally:
        os.utime(ref, (st.st_atime, st.st_mtime))
    n_rows = sum(map(len, dag.runs_and_configs(P).values()))
    assert counts["reference_stats"] == 1 and counts["evaluate"] == n_rows
    assert not {"sample", "train", "fetch"} & set(counts)


def test_one_figure_runs_only_its_jobs(tmp_path):
    """On a clean tree, Figure 2a's PDF needs the fixed-ratio trainings and the
    progressive d4 one (Figure 2a's star), their samples and scores: nothing else."""
    work = copy_repo(tmp_path)
    counts = job_counts(run(["snakemake", "-c2", "-n", dag.report_outputs(P, "pareto")[0]], work).stdout)
    runs = dag.report_runs(P, "pareto")
    n_rows = sum(len(c) for c in runs.values())
    assert counts == {"make_data": 2, "fetch": 1, "train_extractor": 1, "tokenize": 1, "train": len(runs),
                      "sample": n_rows, "reference_stats": 1, "evaluate": n_rows, "report_pareto": 1}


def test_table1_findings_need_only_the_pretrained_jobs(tmp_path):
    """The depth arm's target: Table 1's verdict from the pre-trained model's rows, no training."""
    work = copy_repo(tmp_path)
    counts = job_counts(run(["snakemake", "-c2", "-n", dag.table1_findings(P)], work).stdout)
    n_rows = len(dag.report_runs(P, "table1")[names.PRETRAINED])
    assert counts == {"make_data": 2, "fetch": 1, "train_extractor": 1, "sample": n_rows,
                      "reference_stats": 1, "evaluate": n_rows, "findings_table1": 1}


def test_one_gpu_script_in_table1_mode(tiny):
    """workflow/scripts/small-on-one-gpu.sh prints the verdict the DAG wrote (here on the
    tiny profile, whose rows exist: only findings_table1 runs)."""
    script = ["bash", "workflow/scripts/small-on-one-gpu.sh"]
    r = subprocess.run(script, cwd=tiny, env=dict(env(), PROFILE="tiny", TARGETS="table1"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout == (tiny / dag.table1_findings(P)).read_text() and r.stdout.count("\n## Table 1") == 1


def test_one_gpu_script_stopped_at_its_limit_says_so(tmp_path):
    """A call cut off by its time limit exits 3 and asks to be run again (no stale verdict)."""
    work = copy_repo(tmp_path)
    r = subprocess.run(["bash", "workflow/scripts/small-on-one-gpu.sh", "1"], cwd=work,
                       env=dict(env(), PROFILE="tiny", TARGETS="table1"), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 3 and "has not finished" in r.stderr and "run this again" in r.stderr
    assert not (work / dag.table1_findings(P)).exists()


def _add_depth_arm(work: Path) -> dict:
    """Profile tiny_d10 in work's params.yaml: a deeper VAR on tiny's data, extractor,
    reference statistics and VQVAE (shares_base), as small_hard_d24 is to small_hard."""
    doc = yaml.safe_load((work / "params.yaml").read_text())
    arm = copy.deepcopy(doc["profiles"]["tiny"])
    arm["shares_base"] = "tiny"
    arm["model"]["var"]["depth"] = 10
    arm["sample"]["table1_depth"] = 5
    doc["profiles"]["tiny_d10"] = arm
    (work / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_params(work / "params.yaml", "tiny_d10")


def test_a_depth_arm_runs_table1_on_the_bases_files_and_leaves_them_alone(tiny):
    original = (tiny / "params.yaml").read_text()
    try:
        arm = _add_depth_arm(tiny)
        shared = {f: os.stat(tiny / f).st_mtime_ns for f in dag.shared_base_files(arm)}
        target, on_arm = dag.table1_findings(arm), ["--config", "profile=tiny_d10"]
        counts = job_counts(run(["snakemake", "-c2", "-n", target, *on_arm], tiny).stdout)
        n_rows = len(dag.report_runs(arm, "table1")[names.PRETRAINED])
        assert counts == {"fetch": 1, "sample": n_rows, "evaluate": n_rows, "findings_table1": 1}
        run(["snakemake", "-c2", target, *on_arm], tiny)
        assert {f: os.stat(tiny / f).st_mtime_ns for f in shared} == shared
        record = json.loads((tiny / dag.fetch_record(arm)).read_text())
        base = json.loads((tiny / dag.fetch_record(P)).read_text())
        assert record["shared"]["vae.pth"]["sha256"] == base["files"]["vae.pth"]["sha256"]
        assert sorted(os.listdir(tiny / dag.pretrained_dir(arm))) == ["fetch.json", "var.pth"]
        assert (tiny / target).read_text().count("## Table 1") == 1
        assert "Nothing to be done" in run(["snakemake", "-c2", "-n", "all"], tiny).stdout   # the base: intact
    finally:
        (tiny / "params.yaml").write_text(original)


def test_a_depth_arm_without_its_base_says_what_to_make_first(tmp_path):
    work = copy_repo(tmp_path)
    arm = _add_depth_arm(work)
    r = subprocess.run(["snakemake", "-n", dag.table1_findings(arm), "--config", "profile=tiny_d10"],
                       cwd=work, env=env(), capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "profile tiny_d10 uses profile tiny's data" in out
    assert f"`snakemake {' '.join(dag.shared_base_files(arm))} --config profile=tiny`" in out
