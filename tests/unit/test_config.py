"""params.yaml: profiles resolve, and every bad value stops with the key named."""
import pytest
import yaml

from variant import dag
from variant.config import ParamsError, load_params


def test_default_profile_is_tiny_and_hashed():
    P = load_params()
    assert P["profile"] == "tiny" and len(P["config_hash"]) == 16
    assert load_params(overrides={"sample.cfg": 2.0})["config_hash"] != P["config_hash"]


@pytest.mark.parametrize("overrides, needle", [
    ({"train.batch_size": 0}, "profiles.tiny.train.batch_size: 0 is less than the minimum of 1"),
    ({"train.optimizer.lr": "fast"}, "profiles.tiny.train.optimizer.lr: 'fast' is not of type 'number'"),
    ({"sample.top_p": 1.5}, "profiles.tiny.sample.top_p: 1.5 is greater than the maximum of 1"),
    ({"train.subnet_depths": [2, 8]}, "profiles.tiny.train.subnet_depths: subnet depth 8 is outside 2..7"),
    ({"sample.bridges": [6, 11]}, "profiles.tiny.sample.bridges: bridge size 11 is outside 0..10"),
    ({"train.subnet_depths": [2, 3]}, "profiles.tiny.train.phases: no phase lengths for subnet depth 3"),
    ({"evaluate.extractor": "clip"}, "profiles.tiny.evaluate.extractor: 'clip' is not one of"),
])
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ParamsError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        load_params(overrides=overrides)


def test_unknown_key_is_named(tmp_path):
    doc = yaml.safe_load(open("params.yaml"))
    doc["profiles"]["tiny"]["sample"]["temperature"] = 1.0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=r"profiles.tiny.sample: unknown key 'temperature' \(known: per_class, cfg"):
        load_params(tmp_path / "p.yaml")


def test_unknown_profile_and_missing_imagenet():
    with pytest.raises(ParamsError, match="profile 'huge' is not defined under `profiles` \\(known: tiny, small, small_hard, small_hard_d24, paper, rehearsal\\)"):
        load_params(profile="huge")
    with pytest.raises(ParamsError, match="profiles.paper.data.root is not set"):
        load_params(profile="paper")
    assert load_params(profile="paper", overrides={"data.root": "/imagenet/train"})["data"]["root"] == "/imagenet/train"


def test_paper_grid():
    """The paper profile asks for the paper's whole grid (Tables 1-8, Figures 2a and 2c)."""
    P = load_params(profile="paper", overrides={"data.root": "/imagenet/train"})
    runs = dag.runs_and_configs(P)
    assert dag.trained_runs(P) == ["progressive_d2", "progressive_d4", "progressive_d8", "progressive_d16"] + [
        f"fixed_p{p}_d16" for p in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1")] + ["skipall_d16"]
    assert runs["progressive_d16"] == ["d16_N6", "d16_N7", "d16_N8", "d16_N9", "full"]   # N=10 is full depth
    assert runs["pretrained"] == sorted(["full", "d16_S1-2-3", "d16_S4-5-6", "d16_S7-8-9-10",
                                         "d2_N6", "d4_N6", "d8_N6", "d16_N6"])
    assert runs["skipall_d16"] == ["d16_N0", "full"]
    assert runs["fixed_p0.1_d16@e5"] == ["d16_N6", "full"]   # Figure 2c: the snapshot after epoch 5 of 25
    assert dag.snapshot_epochs(P, "progressive_d16") == [5, 20] and dag.snapshot_epochs(P, "progressive_d8") == []
    assert sum(map(len, runs.values())) == 70   # configurations sampled with 50,000 images each (20 for Fig. 2c)
    assert dag.shard_layout(P) == (5000, 10)    # one sampling job per shard


def test_small_profile_is_the_papers_protocol_scaled_down():
    """The small profile (GPU reproduction of the paper's claims) at the sizes it promises:
    >= 50,000 images of >= 10 classes at >= 32 px, a VAR of depth >= 12, two supernet
    depths, >= 10,000 samples a configuration with bootstrap intervals, and every
    configuration Table 1, Figure 2a and Table 8 read."""
    P = load_params(profile="small")
    d, S = P["data"], P["sample"]
    assert d["source"] == "synthetic" and d["num_classes"] >= 10 and d["image_size"] >= 32
    assert d["num_classes"] * d["train_per_class"] >= 50_000
    assert P["model"]["var"]["depth"] >= 12 and len(P["train"]["subnet_depths"]) == 2
    assert S["per_class"] * d["num_classes"] >= 10_000 and P["evaluate"]["bootstrap"] >= 100
    runs = dag.runs_and_configs(P)
    assert set(dag.table1_configs(P)) < set(runs["pretrained"])
    fd = P["train"]["fixed_ratios"]["depth"]
    for p in P["train"]["fixed_ratios"]["p"]:
        assert {"full", dag.grid_config(P, fd, P["train"]["bridge"])} <= set(runs[dag.fixed_ratio_run(p, fd)])
    for depth in P["train"]["subnet_depths"]:
        assert {dag.grid_config(P, depth, n) for n in S["bridges"]} <= set(runs[f"progressive_d{depth}"]) | {"full"}


@pytest.mark.parametrize("profile", ["paper", "small", "rehearsal"])
def test_every_stage_that_computes_on_the_gpu_gets_one_under_slurm(tmp_path, profile):
    """A cuda profile whose tokenize jobs would be submitted without a GPU (as the paper and
    small profiles were until the rehearsal) is refused, naming the entry."""
    import re
    from pathlib import Path
    from variant.config import GPU_STAGES
    used = {m for f in Path("workflow/rules").glob("*.smk") for m in re.findall(r'resources\("(\w+)"', f.read_text())}
    assert set(GPU_STAGES) <= used                     # the names are the rules' resource entries
    P = load_params(profile=profile, overrides={"data.root": "x"})
    assert all((P["resources"]["default"] | P["resources"].get(n, {})).get("gpus", 0) >= 1 for n in GPU_STAGES)
    doc = yaml.safe_load(open("params.yaml"))
    del doc["profiles"][profile]["resources"]["tokenize"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=rf"profiles.{profile}.resources.tokenize.gpus: the tokenize stage "
                                          r"computes on device cuda, but it has no entry"):
        load_params(tmp_path / "p.yaml", profile, overrides={"data.root": "x"})


def test_the_depth_arm_reads_the_base_profiles_files_and_writes_its_own():
    """small_hard_d24 shares small_hard's data, extractor, reference statistics and VQVAE."""
    arm, base = load_params(profile="small_hard_d24"), load_params(profile="small_hard")
    assert dag.shared_base_files(arm) == dag.shared_base_files(base)
    assert all(f.startswith("artifacts/small_hard/") for f in dag.shared_base_files(arm))
    assert dag.pretrained_var(arm) == "artifacts/small_hard_d24/pretrained/var.pth" != dag.pretrained_var(base)
    assert dag.metric_row(arm, "pretrained", "full").startswith("results/small_hard_d24/")


def _with_arm(tmp_path, **arm):
    """params.yaml plus profile `arm`: tiny's profile with shares_base and `arm`'s dotted keys."""
    doc = yaml.safe_load(open("params.yaml"))
    profile = yaml.safe_load(yaml.safe_dump(doc["profiles"]["tiny"]))
    for dotted, value in {"shares_base": "tiny", **arm}.items():
        *parents, leaf = dotted.split(".")
        node = profile
        for p in parents:
            node = node[p]
        node[leaf] = value
    doc["profiles"]["arm"] = profile
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "p.yaml"


@pytest.mark.parametrize("arm, needle", [
    ({"shares_base": "tinyy"}, "profiles.arm.shares_base: profile 'tinyy' is not defined"),
    ({"shares_base": "arm"}, "profiles.arm.shares_base: 'arm' must be a profile that makes its own base"),
    ({"shares_base": "paper"}, "profile 'paper' has data.source 'imagefolder'"),
    ({"data.num_classes": 7}, "profiles.arm.data.num_classes is 7, but profiles.tiny.data.num_classes is 10"),
    ({"model.vae.ch": 64}, "profiles.arm.model.vae.ch is 64, but profiles.tiny.model.vae.ch is 32"),
])
def test_a_shared_base_must_be_made_alike(tmp_path, arm, needle):
    with pytest.raises(ParamsError, match=needle.replace("(", r"\(")):
        load_params(_with_arm(tmp_path, **arm), "arm")


def test_a_deeper_model_may_share_the_base(tmp_path):
    P = load_params(_with_arm(tmp_path, **{"model.var.depth": 10}), "arm")
    assert P["shares_base"] == "tiny" and dag.data_dir(P, "eval") == "artifacts/tiny/data/eval"
