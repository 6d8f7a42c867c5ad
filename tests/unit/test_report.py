"""`variant report` on synthetic results in the contract's columns: the tables keep the paper's
structure, a configuration not run stays empty, figures are written, and the paper check
flags a planted wrong value and lists the paper's own inconsistencies."""
import math
import random
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from variant import dag, names
from variant.models.checkpoint import save_state_dict
from variant.cli import main
from variant.config import load_params, phases_of
from variant.costmodel import kv_cache_mib
from variant.report.check import measured_vs_paper
from variant.report.figures import (FIGURES, _interval, evolution, pareto_points, plot_losses, plot_schedule,
                                    ratio_epochs)
from variant.report.outputs import write_figure, write_report as report
from variant.report.paper import check_paper
from variant.report.results import Results, var_shape
from variant.report.tables import TABLES, build_tables

REPO = Path(__file__).resolve().parents[2]
# The tiny profile as these tests assume it, whatever params.yaml says today.
TINY = {"model.var": {"depth": 8, "width": 64, "num_heads": 4}, "train.subnet_depths": [2, 4],
        "train.bridge": 6, "train.fixed_ratios": {"depth": 4, "p": [0.2, 0.6, 1.0]},
        "train.skip_all_depths": [4], "train.phases": {"2": [1, 2, 1], "4": [1, 2, 1]},
        "sample.bridges": [6, 7, 8, 9, 10], "sample.table1_depth": 4,
        "profiling.batches": [8, 16], "profiling.modes": ["reference", "lean"]}


def tiny_cfg() -> dict:
    return load_params(REPO / "params.yaml", "tiny", overrides=TINY)


def paper_cfg() -> dict:
    return load_params(REPO / "params.yaml", "paper", overrides={"data.root": "unused-by-report"})


def provenance(cfg) -> dict:
    return dict(profile=cfg["profile"], config_hash=cfg["config_hash"], checkpoint_sha256="ab" * 32,
                git_commit="c0ffee" * 6 + "abcd", seed=0, device="cpu", torch_version="test")


def fake_fid(run: str, config: str) -> float:
    return round(2 + (zlib.crc32(f"{run}/{config}".encode()) % 1000) / 1000, 3)


def quality_rows(cfg, drop=()) -> pd.DataFrame:
    """One row per (run, configuration) that the DAG asks for, less `drop`."""
    D, rows = dag.depth(cfg), []
    for run, configs in dag.runs_and_configs(cfg).items():
        for config in configs:
            if (run, config) in drop:
                continue
            d = D if config == names.FULL else names.parse_config(config).subnet_depth
            rows.append(dict(run=run, config=config, subnet_depth=d, bridge=-1, scales="",
                             fid=fake_fid(run, config), isc_mean=200.0, isc_std=3.0, precision=0.8, recall=0.6,
                             num_samples=200, extractor="test", **provenance(cfg)))
    return pd.DataFrame(rows)


def profiling_rows(cfg, oom=(), kv=None) -> pd.DataFrame:
    """Supernet rows at the training bridge, KV from the cost model unless `kv[(d, batch)]` says."""
    shape, D, K, rows = var_shape(cfg), dag.depth(cfg), dag.num_scales(cfg), []
    for mode in cfg["profiling"]["modes"]:
        for batch in cfg["profiling"]["batches"]:
            for d in (D, *cfg["train"]["subnet_depths"]):
                n = K if d == D else cfg["train"]["bridge"]
                lost = (d, batch) in oom
                nan_if_lost = (lambda v: math.nan if lost else v)  # noqa: E731
                rows.append(dict(gpu="test", mode=mode, method="var" if d == D else "variant",
                                 config="full" if d == D else f"d{d}_N{n}", depth=D, subnet_depth=d, bridge=n,
                                 batch=batch, memory_cap_gib=None, latency_s=nan_if_lost(0.01 * batch * (d + D) / D),
                                 peak_mib=nan_if_lost(100.0 + d), params_mib=nan_if_lost(2.0),
                                 kv_mib=nan_if_lost((kv or {}).get((d, batch), kv_cache_mib(shape, d, n, batch, mode))),
                                 images_per_s=1.0, oom=lost, **provenance(cfg)))
    return pd.DataFrame(rows)


def training_logs(cfg) -> pd.DataFrame:
    rng, rows = random.Random(0), []
    for run in dag.trained_runs(cfg):
        parsed = names.parse_run(run)
        e1, e2, e3 = phases_of(cfg, parsed.subnet_depth)
        for epoch in range(e1 + e2 + e3):
            if parsed.kind == "progressive":
                p = 0.2 if epoch <= e1 else min(1.0, 0.2 + 0.8 * (epoch - e1) / e2)
            else:
                p = parsed.p if parsed.kind == "fixed" else 1.0
            for step in range(5):
                used, loss = rng.random() < p, 6 - 0.1 * epoch
                rows.append(dict(run=run, step=epoch * 5 + step, epoch=epoch, subnet_prob=p, used_subnet=used,
                                 loss=loss, loss_full=math.nan if used else loss,
                                 loss_subnet=loss if used else math.nan, lr=1e-3, tokens_per_s=1.0,
                                 **provenance(cfg)))
    return pd.DataFrame(rows)


DROPPED = ("progressive_d2", "d2_N7")


@pytest.fixture(scope="module")
def findings() -> pd.DataFrame:
    return check_paper()


@pytest.fixture(scope="module")
def tiny() -> Results:
    cfg = tiny_cfg()
    return Results.from_frames(cfg, quality_rows(cfg, drop=[DROPPED]), profiling_rows(cfg, oom=[(8, 16)]),
                               training_logs(cfg))


@pytest.fixture(scope="module")
def tiny_report(tiny, findings, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    sections = report(tiny, out / "tables", out / "figures", out, findings=findings)
    return out, sections


# ---- tables ------------------------------------------------------------------------------------

def test_tables_have_the_papers_rows_and_columns(tiny):
    t = {name: table.frame() for name, table in build_tables(tiny).items()}
    assert list(t["table1"].columns) == ["Strategy", "d=8 scales", "d=4 scales", "Final FID"]
    assert t["table1"]["Strategy"].tolist() == ["Full depth", "Early subnet", "Mid subnet", "Late subnet (Ours)"]
    assert t["table1"].iloc[3, 1:3].tolist() == ["r1-r6", "r7-r10"]
    assert t["table1"].iloc[2, 1:3].tolist() == ["r1-r3, r7-r10", "r4-r6"]

    assert list(t["table2"].columns) == ["Method", "#Steps", "Speedup", "Latency", "Mem", "KV Cache", "#Param",
                                         "FID", "IS", "Prec", "Rec", "Source"]
    assert t["table2"]["Method"].tolist() == ["DiT-XL/2", "LlamaGen-XXL", "VAR-d8", "VAR-CoDe", "VARiant-d4",
                                              "VARiant-d2"]
    copied = t["table2"].set_index("Method")
    assert copied.loc["VAR-CoDe", "#Steps"] == "6+4" and copied.loc["VAR-CoDe", "Source"] == "copied from the paper"
    assert copied.loc["VARiant-d4", "#Steps"] == "6+4" and copied.loc["VAR-d8", "Speedup"] == 1.0
    assert copied.loc["VAR-d8", "FID"] == fake_fid("pretrained", "full")

    assert list(t["table3"].columns) == ["Batch Size", "Method", "KV Cache", "Params", "Total"]
    assert list(zip(t["table3"]["Batch Size"], t["table3"]["Method"])) == [
        (b, m) for b in (8, 16) for m in ("VAR-d8", "VARiant-d4", "VARiant-d2")]
    assert t["table3"].iloc[3, 2:].tolist() == ["OOM"] * 3            # VAR-d8 at batch 16

    assert t["table4"]["Subnet Depth"].tolist() == ["d=2 (25%)", "d=4 (50%)"]
    assert list(t["table4"].columns)[1:] == ["Training-free Subnet", "Training-free Full", "Joint Training Subnet",
                                             "Joint Training Full"]
    assert list(t["table5"].columns) == ["Design", "Subnet (d4) FID", "Subnet (d4) IS", "Full Network FID",
                                         "Full Network IS"]
    assert t["table5"]["Design"].tolist() == ["skip r1-r10", "skip r7-r10"]
    assert t["table7"].values.tolist() == [["d=4", 1, 2, 1, 4], ["d=2", 1, 2, 1, 4]]

    assert list(t["table8"].columns) == ["d", "N=6", "N=7", "N=8", "N=9", "N=10"]
    assert t["table8"]["d"].tolist() == ["d=2", "d=4", "d=8"]
    full = fake_fid("progressive_d4", "full")
    assert t["table8"].iloc[2, 1:].tolist() == [full] * 5
    assert t["table8"].iloc[1, -1] == full                   # N = K runs every scale at full depth


def test_a_configuration_not_run_is_empty_not_zero(tiny, tiny_report):
    grid = build_tables(tiny)["table8"]
    assert pd.isna(grid.frame().loc[0, "N=7"]) and grid.text().loc[0, "N=7"] == ""
    out, _ = tiny_report
    csv = pd.read_csv(out / "tables" / "table8.csv")
    assert math.isnan(csv.loc[0, "N=7"]) and csv.loc[0, "N=6"] == fake_fid("progressive_d2", "d2_N6")
    md_row = next(line for line in (out / "tables" / "table8.md").read_text().splitlines()
                  if line.startswith("| d=2 "))
    assert md_row.split("|")[3].strip() == ""
    assert f"d=2 & {fake_fid('progressive_d2', 'd2_N6'):.2f} &  & " in (out / "tables" / "table8.tex").read_text()


# ---- files ---------------------------------------------------------------------------------------

def test_every_table_figure_and_report_is_written(tiny_report):
    out, _ = tiny_report
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    for name in FIGURES:
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "figures" / f"{name}.csv").is_file() == (name != "fig7_evolution")   # the data it plots
    assert pd.read_csv(out / "figures" / "fig2b_losses.csv").columns.tolist() == ["run", "network", "epoch", "loss", "p"]
    assert set(pd.read_csv(out / "figures" / "fig3a_schedule.csv")["series"]) == {"logged", "Eq. 5"}
    page = (out / "paper_check.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert (out / "paper_check.md").read_text().startswith("# Paper check: profile `tiny`")


def test_figures_without_results_still_write_files(tmp_path):
    write_figure(plot_losses(pd.DataFrame(columns=["run", "p", "network", "epoch", "loss"])), tmp_path / "losses")
    write_figure(plot_schedule(pd.DataFrame(columns=["run", "epoch", "subnet_prob", "used_subnet", "d"]),
                               pd.DataFrame({"d": [2, 2], "epoch": [0, 4], "p": [0.2, 1.0]})),
                 tmp_path / "schedule.pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.pdf", "losses.png", "schedule.pdf",
                                                          "schedule.png"]


def test_pareto_draws_the_bootstrap_intervals_when_the_rows_have_them(tiny):
    points = pareto_points(tiny)
    assert _interval(points, "full") is None   # the tiny rows carry no intervals: no error bars
    points = pd.DataFrame({"full_fid": [1.0, 2.0], "full_fid_low": [0.8, 1.5], "full_fid_high": [1.3, 2.1]})
    below, above = _interval(points, "full")
    assert below.tolist() == pytest.approx([0.2, 0.5]) and above.tolist() == pytest.approx([0.3, 0.1])
    assert _interval(points.assign(full_fid_low=[0.8, None]), "full") is None


def test_fig2c_compares_each_ratio_early_and_at_the_end(tiny):
    points = ratio_epochs(tiny)
    assert points["epoch"].tolist() == [1, 4] * 3 and points["p"].tolist() == [0.2, 0.2, 0.6, 0.6, 1.0, 1.0]
    assert points["run"].tolist()[:2] == ["fixed_p0.2_d4@e1", "fixed_p0.2_d4"]
    assert points["full_fid"].tolist()[:2] == [fake_fid("fixed_p0.2_d4@e1", "full"), fake_fid("fixed_p0.2_d4", "full")]
    assert points["subnet_fid"].tolist()[1] == fake_fid("fixed_p0.2_d4", "d4_N6")
    r = Results.from_frames(paper_cfg(), quality_rows(paper_cfg()), profiling_rows(paper_cfg()))
    measured = measured_vs_paper(r, build_tables(r)).set_index("paper_id")
    early = [fake_fid(f"fixed_p{p}_d16@e5", "full") for p in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7",
                                                               "0.8", "0.9", "1")]
    assert measured.loc["figure2c/epoch5/full_fid_max", "measured"] == f"{max(early):.6g}"
    assert measured.loc["figure2c/epoch5/full_fid_min", "source"].endswith("@e5/full")


def test_fig7_samples_each_phase_end_on_tiny_models(tmp_path):
    """The report item as its rule runs it: the CLI with three checkpoints of the profile's model."""
    from variant.models import VAR, VQVAE
    cfg = load_params(REPO / "params.yaml", "tiny")
    m, paths = cfg["model"], []
    for seed in range(3):                      # three "phase ends": different weights
        torch.manual_seed(seed)
        var = VAR(depth=m["var"]["depth"], width=m["var"]["width"], num_heads=m["var"]["num_heads"],
                  num_classes=cfg["data"]["num_classes"], vocab_size=m["vae"]["vocab_size"],
                  cvae=m["vae"]["z_channels"], patch_nums=tuple(m["patch_nums"]))
        paths.append(str(tmp_path / f"var{seed}.pth"))
        save_state_dict(var, paths[-1])
    save_state_dict(VQVAE(patch_nums=tuple(m["patch_nums"]), **m["vae"]), tmp_path / "vae.pth")
    args = ["report", "--params", str(REPO / "params.yaml"), "--profile", "tiny", "--only", "fig7_evolution",
            "--profiling", "--figures-dir", str(tmp_path / "figures"), "--vae", str(tmp_path / "vae.pth")]
    assert main(args + ["--checkpoints", *paths]) == 0
    for ext in ("pdf", "png"):
        assert (tmp_path / "figures" / f"fig7_evolution.{ext}").stat().st_size > 1000
    r = Results.from_frames(cfg, pd.DataFrame(columns=["run", "config", "profile"]),
                            pd.DataFrame(columns=["mode", "subnet_depth", "bridge", "batch", "profile"]))
    r.checkpoints, r.vae = [paths[0], paths[1], paths[0]], str(tmp_path / "vae.pth")
    cols = evolution(r)
    f7 = cfg["sample"]["fig7"]
    assert [c[0].split("\n")[0] for c in cols] == [t for t, _ in dag.fig7_runs(cfg)]
    assert all(c[2].tolist() == [k for k in f7["classes"] for _ in range(f7["per_class"])] for c in cols)
    assert (cols[0][1] == cols[2][1]).all() and not (cols[0][1] == cols[1][1]).all()   # same seed, other weights
    r.checkpoints = paths[:2]
    with pytest.raises(ValueError, match="Figure 7 needs 3 checkpoints"):
        evolution(r)


# ---- the paper check -----------------------------------------------------------------------------

def test_tiny_profile_compares_structure_only(tiny_report):
    measured, paper_kv, own_kv, _ = (s.frame for s in tiny_report[1])
    assert set(measured["status"]) <= {"n/a (tiny profile)", "not run"}
    assert "table8/d2/N7" in set(measured.loc[measured["status"] == "not run", "paper_id"])
    assert measured.loc[measured["paper_id"] == "table8/d2/N6", "measured"].item() == \
        f"{fake_fid('progressive_d2', 'd2_N6'):.6g}"
    # The analytic checks run in every profile: the paper's d16 KV (16092 MB) is not the cost model's.
    d16 = paper_kv[paper_kv["quantity"].str.startswith("table2/VARiant-d16/kv_mb")]
    assert d16["status"].item() == "FAIL" and d16["cost_model"].item() == "17091.6"
    assert (paper_kv.loc[paper_kv["quantity"].str.startswith("table2/VAR-d30/kv_mb"), "status"] == "PASS").all()
    assert len(own_kv) == 10 and set(own_kv["status"]) == {"PASS"}   # 12 profiled rows, 2 OOM


def test_paper_profile_flags_a_planted_kv_value(findings, tmp_path):
    cfg = paper_cfg()
    planted = {(16, 64): 99999.0}
    quality = quality_rows(cfg).assign(fid=lambda f: f["fid"].where(
        ~((f["run"] == "pretrained") & (f["config"] == "full")), 1.97))   # paper: 1.95, within 0.1
    r = Results.from_frames(cfg, quality, profiling_rows(cfg, oom=[(30, 128)], kv=planted), training_logs(cfg))
    measured, _, own_kv, _ = (s.frame for s in report(r, tmp_path / "t", tmp_path / "f", tmp_path,
                                                        findings=findings))
    status = measured.set_index("paper_id")["status"]
    assert status["table2/VARiant-d16/kv_mb"] == "FAIL" and status["table3/bs64/VARiant-d16/kv_mb"] == "FAIL"
    assert status["table2/VAR-d30/kv_mb"] == "PASS"           # 28687.5 MiB measured vs 28677 MB printed
    assert status["table2/VAR-d30/fid"] == "PASS"
    assert status["table3/bs128/VAR-d30/kv_mb"] == "PASS"     # OOM in both
    assert status["table2/VAR-d30/latency_s"] == "info"
    assert set(own_kv.loc[own_kv["quantity"] == "reference d=16, N=6, batch 64", "status"]) == {"FAIL"}
    row = measured.set_index("paper_id").loc["table2/VAR-d30/fid"]
    assert (row["source"], row["config_hash"], row["git_commit"], row["checkpoint"]) == (
        "pretrained/full", cfg["config_hash"], "c0ffeec0ffee", "ab" * 6)
    text = (tmp_path / "paper_check.md").read_text()
    assert "table2/VARiant-d16/kv_mb" in text and "FAIL" in text


def test_report_lists_the_papers_own_inconsistencies(tiny_report):
    out, sections = tiny_report
    findings = sections[-1].frame
    d2 = findings[(findings["claimed"] == "2.67") & (findings["recomputed"] == "2.97")]
    assert not d2.empty
    assert d2["claim (place 1)"].str.contains("2.67").all() and d2["against (place 2)"].str.contains("2.97").all()
    assert "2.67" in (out / "paper_check.html").read_text()


def test_cli_writes_the_report(tmp_path):
    cfg = load_params(REPO / "params.yaml", "tiny")
    paths = {name: tmp_path / f"{name}.parquet" for name in ("quality", "profiling", "log")}
    quality_rows(cfg).to_parquet(paths["quality"])
    profiling_rows(cfg).to_parquet(paths["profiling"])
    training_logs(cfg).to_parquet(paths["log"])
    rc = main(["report", "--params", str(REPO / "params.yaml"), "--profile", "tiny", "--quality",
               str(paths["quality"]), "--profiling", str(paths["profiling"]), "--training-logs", str(paths["log"]),
               "--tables-dir", str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures"),
               "--report-dir", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "tables" / "table8.tex").is_file() and (tmp_path / "paper_check.html").is_file()


def test_one_item_reads_only_its_own_inputs(tmp_path, monkeypatch, capsys):
    """`--only table1` needs quality rows alone: no profiling file is opened; Table 2 reads one."""
    from variant.stages.report import reads
    cfg = load_params(REPO / "params.yaml", "tiny")
    assert reads(cfg, "table1") == {"quality"} and reads(cfg, "table3") == {"profiling"}
    assert reads(cfg, "table7") == set() and reads(cfg, "fig2b_losses") == {"logs"}
    assert reads(cfg, "paper_check") == {"quality", "profiling"}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    quality_rows(cfg).to_parquet(tmp_path / "results" / "tiny" / "quality.parquet")
    args = ["report", "--params", str(REPO / "params.yaml"), "--profile", "tiny", "--only"]
    assert main(args + ["table1"]) == 0
    table1 = pd.read_csv(tmp_path / "results" / "tiny" / "tables" / "table1.csv")
    assert table1.loc[0, "Final FID"] == fake_fid("pretrained", "full")
    assert sorted(p.name for p in (tmp_path / "results" / "tiny" / "tables").iterdir()) == [
        "table1.csv", "table1.md", "table1.tex"]
    assert main(args + ["table7"]) == 0 and main(args + ["pareto"]) == 0
    assert (tmp_path / "results" / "tiny" / "figures" / "pareto.png").is_file()   # per profile by default
    capsys.readouterr()
    assert main(args + ["table2"]) == 2
    assert "profiling.parquet" in capsys.readouterr().err
    assert main(args + ["table6"]) == 2 and "--only 'table6': not one of" in capsys.readouterr().err


def test_sample_grid_shows_the_first_generated_image_of_each_class(tmp_path):
    """Figures 4/6: each row holds the first image in generation order of its first classes,
    whether the file is packed shuffled (with sample_index) or class-sorted (without)."""
    from variant.report.grids import grid_rows, sample_grid
    classes, per_class = 10, 4
    index = np.arange(classes * per_class)                    # generation order, class-major
    images = np.broadcast_to(index.astype(np.uint8)[:, None, None, None], (len(index), 2, 2, 3))
    labels = np.repeat(np.arange(classes), per_class)
    stored = np.random.default_rng(0).permutation(len(index))   # the packed file's order
    np.savez(tmp_path / "shuffled.npz", arr_0=images[stored], labels=labels[stored], sample_index=stored)
    np.savez(tmp_path / "sorted.npz", arr_0=images, labels=labels)
    files = [str(tmp_path / "shuffled.npz"), str(tmp_path / "sorted.npz")]
    rows = grid_rows(files, per_row=8)
    assert [[int(img[0, 0, 0]) for img in row] for row in rows] == [list(range(0, 32, 4))] * 2
    sample_grid(files, ["shuffled", "class-sorted"], tmp_path / "grid")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "grid.pdf").is_file()
    assert main(["grid", *files, "--titles", "only one", "--out", str(tmp_path / "g")]) == 2   # 2 files, 1 title


def test_table5_without_skip_all_runs_has_the_header_alone():
    from variant.report.tables import to_latex, to_markdown
    cfg = load_params(REPO / "params.yaml", "tiny", overrides=TINY | {"train.skip_all_depths": []})
    assert not any(run.startswith("skipall") for run in dag.runs_and_configs(cfg))
    r = Results.from_frames(cfg, quality_rows(cfg), profiling_rows(cfg), training_logs(cfg))
    table = build_tables(r, only="table5")["table5"]
    columns = ["Design", "Subnet FID", "Subnet IS", "Full Network FID", "Full Network IS"]
    assert list(table.frame().columns) == columns and table.frame().empty and table.measured == []
    md = to_markdown(table).splitlines()
    rows = [line for line in md if line.startswith("|")]
    assert rows == ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] * 5) + "|"]
    tex = to_latex(table)
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert body.strip() == "" and "Full Network FID" in tex
