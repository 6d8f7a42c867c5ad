"""`variant findings` judges each claim by FID differences against their bootstrap errors."""
import math

import numpy as np
import pandas as pd
import pytest

from variant import dag, names
from variant.cli import main
from variant.config import load_params
from variant.stages.findings import claims

P = load_params("params.yaml", "tiny")


def quality(fid_of, half_width=0.1):
    """One row per configuration the claims read; FID from fid_of(run, config)."""
    rows = [{"run": run, "config": cfg, "fid": fid_of(run, cfg), "num_samples": 100, "bootstrap": 50}
            for run, cfgs in dag.runs_and_configs(P).items() for cfg in cfgs]
    df = pd.DataFrame(rows)
    df["fid_ci_low"], df["fid_ci_high"] = df["fid"] - half_width, df["fid"] + half_width
    return df


def as_the_paper_says(run, cfg):
    """Lower FID for late-scale subnets, the progressive run, deeper d and larger N (with
    shrinking steps in N)."""
    if run == "pretrained":
        return {dag.table1_configs(P)[0]: 30.0, dag.table1_configs(P)[1]: 20.0}.get(cfg, 10.0)
    fid = 10.0 if run.startswith("progressive") else 15.0
    if "_N" in cfg:
        d, n = (int(x) for x in cfg[1:].split("_N"))
        fid += 20.0 / d + 8.0 / (n - 5)   # 8, 4, 2.7, 2, 1.6 for N = 6..10
    return fid


def verdicts(df):
    return {c["title"].split(":")[0] + ":" + c["title"].split(":")[1][:20]: c["verdict"] for c in claims(P, df)}


def test_claims_that_hold_are_reproduced():
    assert set(verdicts(quality(as_the_paper_says)).values()) == {"reproduced"}


def test_one_fixed_ratio_better_than_progressive_is_not_reproduced():
    p = P["train"]["fixed_ratios"]["p"][1]
    worse = dag.fixed_ratio_run(p, P["train"]["fixed_ratios"]["depth"])
    df = quality(lambda run, cfg: as_the_paper_says(run, cfg) - (8.0 if run == worse else 0.0))
    fig2a = [c for c in claims(P, df) if c["title"].startswith("Figure 2a")][0]
    assert fig2a["verdict"] == "not reproduced"
    assert sum(r.endswith("| - |") for r in fig2a["rows"]) == 2   # both objectives of that p


def test_differences_within_the_errors_are_inconclusive():
    df = quality(as_the_paper_says, half_width=50.0)
    assert set(verdicts(df).values()) == {"inconclusive"}
    df[["fid_ci_low", "fid_ci_high"]] = math.nan
    assert all(v.startswith("inconclusive (no bootstrap") for v in verdicts(df).values())


def test_missing_configurations_are_named_not_guessed():
    df = quality(as_the_paper_says)
    df = df[df["run"] != "pretrained"]
    table1 = claims(P, df)[0]
    assert table1["verdict"] == "inconclusive (configurations not run)" and "not run" in table1["rows"][0]


def test_command_writes_markdown_and_names_a_missing_file(tmp_path, capsys):
    quality(as_the_paper_says).to_parquet(tmp_path / "q.parquet")
    assert main(["findings", "--profile", "tiny", "--quality", str(tmp_path / "q.parquet"),
                 "--out", str(tmp_path / "f.md")]) == 0
    text = (tmp_path / "f.md").read_text()
    assert text.count("**reproduced**") == 5 and "± 0.10" in text
    assert main(["findings", "--profile", "tiny", "--quality", str(tmp_path / "nope.parquet"),
                 "--out", str(tmp_path / "g.md")]) == 2
    assert "nope.parquet" in capsys.readouterr().err


def test_one_bridge_value_makes_the_n_claims_inconclusive_not_a_crash():
    one = load_params("params.yaml", "tiny", overrides={"sample.bridges": [6]})
    rows = [{"run": run, "config": cfg, "fid": as_the_paper_says(run, cfg), "num_samples": 100, "bootstrap": 50}
            for run, cfgs in dag.runs_and_configs(one).items() for cfg in cfgs]
    df = pd.DataFrame(rows)
    df["fid_ci_low"], df["fid_ci_high"] = df["fid"] - 0.1, df["fid"] + 0.1
    by_title = {c["title"]: c for c in claims(one, df)}
    diminishing = by_title["Table 8: diminishing returns in N"]
    grows = by_title["Table 8: quality grows with the bridge N"]
    depths = one["train"]["subnet_depths"]
    for claim, needs in ((diminishing, "needs three values of N"), (grows, "needs two values of N")):
        assert claim["verdict"] == "inconclusive (configurations not run)"
        assert len(claim["rows"]) == len(depths) and all(needs in row for row in claim["rows"])
    # the claims that need one N only are still judged on these rows
    assert by_title["Table 8: quality grows with the subnet depth d"]["verdict"] == "reproduced"


def test_bridges_of_only_n_equal_k_leave_the_n_and_d_claims_inconclusive():
    """N = K is the full network for every d: nothing of Table 8 can be compared."""
    K = dag.num_scales(P)
    only_k = load_params("params.yaml", "tiny", overrides={"sample.bridges": [K]})
    rows = [{"run": run, "config": cfg, "fid": as_the_paper_says(run, cfg), "num_samples": 100, "bootstrap": 50}
            for run, cfgs in dag.runs_and_configs(only_k).items() for cfg in cfgs]
    df = pd.DataFrame(rows)
    df["fid_ci_low"], df["fid_ci_high"] = df["fid"] - 0.1, df["fid"] + 0.1
    by_title = {c["title"]: c for c in claims(only_k, df)}
    assert by_title["Table 8: quality grows with the subnet depth d"]["verdict"].startswith("inconclusive")
    assert by_title["Table 8: quality grows with the bridge N"]["verdict"] == "inconclusive (configurations not run)"
    assert by_title["Table 1: early scales need depth, late scales do not"]["verdict"] == "reproduced"


def test_seed_replicas_average_and_their_spread_widens_the_interval():
    """Three seeds of each training: the mean enters the comparison, and a seed-to-seed
    spread larger than the gap turns a claim that one seed reproduces into inconclusive."""
    from variant.stages.findings import FID, seeds_se, with_families
    R = load_params("params.yaml", "tiny", overrides={"train.replica_seeds": [1, 2]})
    offsets = {None: 0.0, 1: 3.0, 2: -3.0}                # seed effects around the base FIDs

    def rows(spread):
        out = []
        for run, cfgs in dag.runs_and_configs(R).items():
            r = names.parse_run(run)
            for cfg in cfgs:
                fid = as_the_paper_says(r.family, cfg) + spread * offsets[r.seed]
                out.append({"run": run, "config": cfg, "fid": fid, "fid_ci_low": fid - 0.1,
                            "fid_ci_high": fid + 0.1, "num_samples": 100, "bootstrap": 50})
        return with_families(pd.DataFrame(out))

    tight, loose = rows(0.01), rows(2.0)
    f = FID.of(loose, "progressive_d4", "full")
    assert f.seeds == 3 and f.value == pytest.approx(10.0)
    assert f.se > 1.0 > FID.of(tight, "progressive_d4", "full").se > 0.1 / 1.96 / 3**0.5 * 0.9
    assert str(f).endswith("(3 seeds)")
    # the two-level bootstrap from first principles: no spread leaves the sampling SE / sqrt(S)
    assert seeds_se(np.array([5.0, 5.0, 5.0]), np.array([0.3, 0.3, 0.3])) == pytest.approx(0.3 / 3**0.5, rel=0.05)
    fig2a = lambda df: [c for c in claims(R, df) if c["title"].startswith("Figure 2a")][0]["verdict"]  # noqa: E731
    assert fig2a(tight) == "reproduced" and fig2a(loose) == "inconclusive"


def test_replica_seeds_must_be_distinct():
    from variant.config import ParamsError
    with pytest.raises(ParamsError, match="replica_seeds"):
        load_params("params.yaml", "tiny", overrides={"train.replica_seeds": [1, 1]})


def test_table1_alone_from_the_pretrained_rows_in_several_files(tmp_path):
    """What the depth arm runs: `--claims table1` on the pre-trained model's metric rows,
    one file per configuration, without the grid's."""
    df = quality(as_the_paper_says)
    rows = []
    for i, (_, row) in enumerate(df[df["run"] == names.PRETRAINED].iterrows()):
        rows.append(str(tmp_path / f"{i}.parquet"))
        row.to_frame().T.to_parquet(rows[-1])
    assert main(["findings", "--profile", "tiny", "--claims", "table1", "--quality", *rows,
                 "--out", str(tmp_path / "t1.md")]) == 0
    text = (tmp_path / "t1.md").read_text()
    assert text.count("\n## ") == 1 and "## Table 1" in text and "**reproduced**" in text
    with pytest.raises(SystemExit):
        main(["findings", "--profile", "tiny", "--claims", "table9", "--quality", *rows, "--out", "x.md"])
