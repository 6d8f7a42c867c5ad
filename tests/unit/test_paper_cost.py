"""benchmarks/paper_cost.py on synthetic rows: each projected quantity against its first-principles formula."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from variant import dag
from variant.config import load_params

REPO = Path(__file__).resolve().parents[2]
IMAGES, L = 1_281_167, 680            # ImageNet train images, VAR tokens at 256 px
TPS0, TPS1 = 40_000.0, 60_000.0       # synthetic tokens/s at subnet probability 0 and 1
SQ = [k * k for k in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]   # tokens of each scale
A, B = 0.004, 3.6e-7                  # synthetic s/image = A + B x token-layers, exactly on a line


def token_layers(config):
    """Tokens x layers one image runs: 30 layers at a full-depth scale, d at a subnet scale."""
    if config == "full":
        return 30 * sum(SQ)
    d, _, rest = config[1:].partition("_")
    sub = set(range(int(rest[1:]), 10)) if rest[0] == "N" else {int(k) - 1 for k in rest[1:].split("-")}
    return sum((int(d) if k in sub else 30) * SQ[k] for k in range(10))


GEN = {(d, n): 1 / (A + B * token_layers("full" if d == 30 else f"d{d}_N{n}"))
       for d, n in ((30, 10), (16, 6), (8, 6), (4, 6), (2, 6))}   # images/s
FEAT = 4000.0                         # Inception images/s
PACK_BYTES, TOKEN_BYTES = 200_000_000, 8_000_000


@pytest.fixture(scope="module")
def pc():
    spec = importlib.util.spec_from_file_location("paper_cost", REPO / "benchmarks" / "paper_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def P():
    return load_params(REPO / "params.yaml", "paper", {"data.root": "unused"})


def train_rows(eff2=1.0):
    rows = [dict(n_gpus=n, subnet_prob=p, tokens_per_s=t * n * (eff2 if n == 2 else 1.0))
            for n in (1, 2) for p, t in ((0.0, TPS0), (1.0, TPS1))]
    return pd.DataFrame(rows).assign(gpu="synthetic", depth=30, batch_per_gpu=16, accum=8, dtype="bf16", oom=False)


def write_inputs(tmp_path, eff2=1.0):
    train_rows(eff2).to_parquet(tmp_path / "train.parquet")
    gen = [dict(what="generate+decode", subnet_depth=d, bridge=n, seeded=True, images_per_s=r)
           for (d, n), r in GEN.items()] + [dict(what="inception features", images_per_s=FEAT)]
    pd.DataFrame(gen).to_parquet(tmp_path / "gen.parquet")
    job = lambda stage, wall, nbytes, job="", gpu="G": dict(  # noqa: E731
        stage=stage, job=job, rc=0, wall_s=wall, bytes_written=nbytes, gpu=gpu, peak_gpu_mib=1.0, peak_host_mib=1.0)
    rows = [job("stand-ins", 80.0, 10e9), job("fetch", 40.0, 9000, gpu=""), job("tokenize", 30.0, TOKEN_BYTES),
            job("sample", 60.0, 1e8, "config=full shards=0"), job("sample", 60.0, 1e8, "config=full shards=1"),
            job("sample", 10.0, PACK_BYTES, "config=full", gpu=""), job("reference-stats", 15.0, 4e7),
            job("evaluate", 30.0, 16_000, "run=pretrained config=full"), job("report", 5.0, 500, "only=table7", gpu=""),
            dict(job("profile", 47.0, 80_000), rc=1)]
    (tmp_path / "stages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["--train", str(tmp_path / "train.parquet"), "--generation", str(tmp_path / "gen.parquet"),
            "--stages", str(tmp_path / "stages.jsonl"), "--out", str(tmp_path / "cost.parquet")]


@pytest.fixture(scope="module")
def table(pc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cost")
    assert pc.main(write_inputs(tmp)) == 0
    return pd.read_parquet(tmp / "cost.parquet").set_index("stage")


def p_of(run_kind, p_fixed, epoch, e1, e2):
    """Algorithm 1 from the paper's text: 0.2, then linear up to 1.0 over phase 2, then 1.0."""
    if run_kind == "fixed":
        return p_fixed
    n = epoch + 1
    return 0.2 if n <= e1 else (0.2 + 0.8 * (n - e1) / e2 if n <= e1 + e2 else 1.0)


def hours_by_hand(kind, p_fixed, phases):
    e1, e2, e3 = phases
    return IMAGES * L * sum((1 - p) / TPS0 + p / TPS1
                            for p in (p_of(kind, p_fixed, e, e1, e2) for e in range(e1 + e2 + e3))) / 3600


def test_one_progressive_run_is_its_epochs_at_their_probabilities(pc, P):
    tps, _ = pc.scaled_tps(train_rows(), 30, 16, gpus=8)
    got = pc.train_gpu_hours("progressive_d16", (5, 15, 5), tps, gpus=8)
    assert got == pytest.approx(hours_by_hand("progressive", None, (5, 15, 5)), rel=1e-12)
    assert got == pytest.approx(IMAGES * L * (5 * (0.8 / TPS0 + 0.2 / TPS1)
                                              + sum((0.8 - 0.8 * k / 15) / TPS0 + (0.2 + 0.8 * k / 15) / TPS1
                                                    for k in range(1, 16)) + 5 / TPS1) / 3600)


def test_train_row_sums_every_training_of_the_grid(table, P):
    want = 0.0
    for d in P["train"]["subnet_depths"]:
        want += hours_by_hand("progressive", None, P["train"]["phases"][str(d)])
    for p in P["train"]["fixed_ratios"]["p"]:
        want += hours_by_hand("fixed", p, P["train"]["phases"][str(P["train"]["fixed_ratios"]["depth"])])
    for d in P["train"]["skip_all_depths"]:
        want += hours_by_hand("skipall", None, P["train"]["phases"][str(d)])
    assert table.loc["train", "gpu_hours"] == pytest.approx(want, rel=1e-12)
    assert table.loc["train", "jobs"] == 4 + 10 + 1


def test_imperfect_scaling_is_extrapolated_as_ring_all_reduce(pc):
    tps, eff = pc.scaled_tps(train_rows(eff2=0.9), 30, 16, gpus=8)
    overhead = (1 / 0.9 - 1) * 2 * 7 / 8      # ring all-reduce moves 2(n-1)/n per GPU
    assert eff[0.0] == pytest.approx(1 / (1 + overhead))
    assert tps[0.0] == pytest.approx(8 * TPS0 / (1 + overhead))


def test_sample_disk_is_bytes_per_image_times_50000(table, P):
    per_image = PACK_BYTES / 1000             # the rehearsal's 1,000 images a configuration
    configs = sum(len(c) for c in dag.runs_and_configs(P).values())
    assert table.loc["sample pack", "disk_gb"] == pytest.approx(configs * per_image * 50_000 / 1e9)
    assert table.loc["sample pack", "gpu_hours"] == 0     # the pack job ran without a GPU
    assert table.loc["sample shards", "jobs"] == configs * 10


def test_sample_shards_are_a_fixed_cost_plus_images_at_the_rate(table, P):
    fixed = 60.0 - 500 * (A + B * token_layers("full"))    # a rehearsal shard: 500 images of `full`
    configs = [c for cs in dag.runs_and_configs(P).values() for c in cs]
    want = sum(10 * (fixed + 5000 * (A + B * token_layers(c))) for c in configs)
    assert table.loc["sample shards", "gpu_hours"] == pytest.approx(want / 3600, rel=1e-9)


def test_tokens_checkpoints_and_evaluate(table, pc, P):
    samples = IMAGES * 35 * 2                  # 35 RandAugment views (the longest schedule) x 2 flips
    assert table.loc["tokenize", "disk_gb"] == pytest.approx(TOKEN_BYTES / (1000 * 3 * 2) * samples / 1e9)
    assert table.loc["tokenize", "gpu_hours"] == pytest.approx(30.0 / 6000 * samples / 3600)
    ckpt = pc.checkpoint_bytes(P)
    assert 2.0e9 * 4 < ckpt < 2.02e9 * 4        # VAR-d30: 2.0 B fp32 parameters
    assert table.loc["train", "disk_gb"] == pytest.approx((15 + 12) * ckpt / 1e9)
    assert table.loc["train resume state", "disk_gb"] == pytest.approx(3 * ckpt / 1e9)
    configs = sum(len(c) for c in dag.runs_and_configs(P).values())
    assert table.loc["evaluate", "gpu_hours"] == pytest.approx(configs * (30.0 - 1000 / FEAT + 50_000 / FEAT) / 3600)


def test_total_is_the_sum_of_the_stages_and_unmeasured_is_said(table):
    stages = table.drop("total")
    for col in ("gpu_hours", "cpu_hours", "disk_gb"):
        assert table.loc["total", col] == pytest.approx(stages[col].sum())
    assert pd.isna(table.loc["profile", "gpu_hours"])          # its only row failed
    assert "not measured" in table.loc["profile", "source"]
    assert table.loc["fetch", "gpu_hours"] == 0 and table.loc["fetch", "cpu_hours"] == pytest.approx(40 / 3600)


@pytest.mark.parametrize("which", ["missing", "empty"])
def test_bad_input_file_exits_2_with_one_line(pc, tmp_path, capsys, which):
    argv = write_inputs(tmp_path)
    bad = tmp_path / "stages.jsonl"
    if which == "missing":
        bad.unlink()
    else:
        bad.write_text("")
    assert pc.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert not (tmp_path / "cost.parquet").exists()


def test_stage_rows_may_be_parquet(pc, tmp_path, table):
    argv = write_inputs(tmp_path)
    rows = pd.read_json(tmp_path / "stages.jsonl", lines=True)
    rows.iloc[:5].to_parquet(tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text(rows.iloc[5:].to_json(orient="records", lines=True))
    i = argv.index("--stages")
    argv[i + 1:i + 2] = [str(tmp_path / "a.parquet"), str(tmp_path / "b.jsonl")]
    assert pc.main(argv) == 0
    got = pd.read_parquet(tmp_path / "cost.parquet").set_index("stage")
    pd.testing.assert_frame_equal(got, table)
