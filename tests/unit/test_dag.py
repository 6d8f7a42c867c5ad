"""variant.dag: the params each stage reads are declared once, exist, and are enforced;
the artifacts' paths and the report items come from one place."""
import json

import pytest
import yaml

from variant import cli, dag, dvcgen
from variant.config import SCHEMA, ParamsError, StageParams, load_params, reading_for

PROFILES = list(yaml.safe_load(open("params.yaml"))["profiles"])


def profile(name):
    return load_params(profile=name, overrides={"data.root": "/imagenet/train"})


def test_undeclared_key_raises_naming_stage_and_key():
    with reading_for("sample"):
        P = load_params()
    assert isinstance(P, StageParams)
    assert P["sample"]["cfg"] == 1.5 and P["model"]["var"]["depth"] == 8   # declared: readable
    assert P["device"] == "cpu" and P["profile"] == "tiny" and len(P["config_hash"]) == 16
    message = "stage sample read params key 'sample.bridges' that variant.dag.STAGE_PARAMS['sample'] does not declare"
    with pytest.raises(ParamsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        P["sample"]["bridges"]
    for read in (lambda: P["train"], lambda: P.get("train"), lambda: "train" in P,
                 lambda: P["sample"].get("fig7", {}), lambda: P["data"]["image_size"]):
        with pytest.raises(ParamsError, match="stage sample read params key"):
            read()


def test_declared_key_a_profile_leaves_out_reads_as_missing():
    with reading_for("train"):
        P = load_params(profile="tiny")   # tiny sets no train.compile
    assert P["train"].get("compile") is None and P["train"].get("compile", False) is False
    with pytest.raises(KeyError):
        P["train"]["compile"]


def test_restriction_keeps_values_hash_and_serialises():
    full = load_params()
    with reading_for("profile"):
        P = load_params()
    assert P["config_hash"] == full["config_hash"]   # rows keep the profile's hash
    assert json.loads(json.dumps(P))["profiling"] == full["profiling"]
    assert set(P["train"]) == {"subnet_depths", "bridge"}


def test_commands_outside_the_pipeline_read_freely():
    with reading_for("verify-golden"):
        assert type(load_params()) is dict
    assert type(load_params()) is dict   # and nothing is active outside the context


def test_every_stage_is_a_cli_command():
    assert set(dag.STAGE_PARAMS) <= set(cli.COMMANDS)
    assert set(dvcgen.STAGE_CODE) <= set(dag.STAGE_PARAMS)


def section_specs(schema, section):
    """The section's schema and those its conditional branches (allOf: if/then/else) add."""
    specs = [schema["properties"][section]]
    for branch in schema.get("allOf", []):
        for part in (branch.get("then", {}), branch.get("else", {})):
            spec = part.get("properties", {}).get(section)
            if spec is not None:
                ref = spec.get("$ref", "").removeprefix("#/$defs/")
                specs.append(schema["$defs"][ref] if ref else spec)
    return specs


@pytest.mark.parametrize("name", PROFILES)
def test_each_declared_key_exists_or_is_optional_in_the_schema(name):
    P, schema = profile(name), json.loads(SCHEMA.read_text())
    missing = object()
    for stage, keys in dag.STAGE_PARAMS.items():
        for key in keys:
            if dag.lookup(P, key, missing) is not missing:
                continue
            section, _, leaf = key.partition(".")
            specs = section_specs(schema, section)
            assert any(leaf in s.get("properties", {}) for s in specs), f"{stage}: {key} is no params key"
            assert not any(leaf in s.get("required", []) for s in specs[:1]), f"{stage}: {key} missing from {name}"


def test_snakemake_and_dvc_hash_the_same_declared_keys():
    P = load_params()
    stages = dvcgen.stages(P)
    key = lambda k: f"profiles.tiny.{k}"
    # the profile stage reads sampling knobs and the subnet grid, not only `profiling`
    assert {key("sample.cfg"), key("sample.top_k"), key("train.subnet_depths")} <= set(stages["profiling"]["params"])
    assert key("train.augment") in stages["tokens"]["params"]            # its views follow the augmentation
    assert key("train.compile") not in stages["train_progressive_d2"]["params"]   # tiny leaves it out
    small = dvcgen.stages(profile("small"))
    assert "profiles.small.train.compile" in small["train_progressive_d3"]["params"]
    for s in stages.values():
        assert "--cores all" in s["cmd"]


def test_report_items_and_paths_are_per_profile():
    tiny, small = load_params(), profile("small")
    assert dag.SAMPLE_GRIDS == ("fig4_samples", "fig6_samples")
    assert dag.report_outputs(tiny, "pareto") == ["results/tiny/figures/pareto.pdf", "results/tiny/figures/pareto.png"]
    assert dag.report_outputs(small, "table2")[0] == "results/small/tables/table2.csv"
    rows = dag.sample_grid(tiny, "fig4_samples")
    assert rows[0] == ("pretrained", "full", "VAR-d8") and [t for *_, t in rows[1:]] == ["d4", "d2"]
    assert [c for _, c, _ in dag.sample_grid(tiny, "fig6_samples")] == ["full", "d4_N9", "d4_N8", "d4_N7", "d4_N6"]
    assert dag.checkpoint(tiny, "fixed_p0.2_d4@e1") == "artifacts/tiny/snapshots/fixed_p0.2_d4/e1.pth"
    assert dag.checkpoint_input(tiny, "fixed_p0.2_d4@e1") == "artifacts/tiny/snapshots/fixed_p0.2_d4"
    assert dag.metric_row(tiny, "{run}", "{config}") == "results/tiny/metrics/{run}/{config}.parquet"
    with pytest.raises(ValueError, match="not a sample grid"):
        dag.sample_grid(tiny, "pareto")
