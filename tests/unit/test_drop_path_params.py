"""params train.drop_path: in every profile, validated, and part of what a training depends on."""
import pytest
import yaml

from variant import dvcgen
from variant.config import ParamsError, load_params


def test_every_profile_sets_drop_path_and_paper_follows_the_reference():
    doc = yaml.safe_load(open("params.yaml"))
    assert all("drop_path" in prof["train"] for prof in doc["profiles"].values())
    P = load_params(profile="paper", overrides={"data.root": "/imagenet/train"})
    assert P["train"]["drop_path"] == 0.1 * P["model"]["var"]["depth"] / 24 == 0.125
    assert load_params(profile="tiny")["train"]["drop_path"] == 0.0


@pytest.mark.parametrize("value, needle", [
    (1.0, "profiles.tiny.train.drop_path: 1.0 is greater than or equal to the maximum of 1"),
    (-0.1, "profiles.tiny.train.drop_path: -0.1 is less than the minimum of 0"),
    ("a lot", "profiles.tiny.train.drop_path: 'a lot' is not of type 'number'"),
])
def test_bad_drop_path_names_the_key(value, needle):
    with pytest.raises(ParamsError, match=needle.replace("(", r"\(")):
        load_params(overrides={"train.drop_path": value})


def test_drop_path_is_required(tmp_path):
    doc = yaml.safe_load(open("params.yaml"))
    del doc["profiles"]["tiny"]["train"]["drop_path"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match="profiles.tiny.train: 'drop_path' is a required property"):
        load_params(tmp_path / "p.yaml")


def test_train_stages_depend_on_drop_path():
    """Editing the rate makes every training stale (DVC; Snakemake hashes the whole train section)."""
    P = load_params(profile="tiny")
    stages = dvcgen.stages(P)
    trains = [s for name, s in stages.items() if name.startswith("train_")]
    assert trains and all("profiles.tiny.train.drop_path" in s["params"] for s in trains)
    assert load_params(overrides={"train.drop_path": 0.1})["config_hash"] != P["config_hash"]
