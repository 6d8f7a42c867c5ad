"""variant.names: every name the DAG builds parses back, and the wildcards accept exactly those."""
import re

import pytest

from variant import dag, names
from variant.config import load_params


def test_built_names_parse_back():
    assert names.parse_run(names.progressive(16)) == names.Run("progressive_d16", "progressive", 16)
    assert names.parse_run(names.fixed_ratio(0.2, 16)).p == 0.2
    snap = names.parse_run(names.snapshot(names.fixed_ratio(1.0, 4), 5))
    assert (snap.name, snap.kind, snap.epoch, snap.base) == ("fixed_p1_d4@e5", "fixed", 5, "fixed_p1_d4")
    assert names.parse_run(names.skip_all(8)).kind == "skipall"
    assert names.parse_config(names.zones(4, 6)) == names.Config("d4_N6", "zones", 4, 6)
    assert names.parse_config(names.on_scales(16, [7, 8, 9, 10])).scales == (7, 8, 9, 10)
    assert names.grid_config(4, 10, 10) == names.FULL and names.grid_config(4, 9, 10) == "d4_N9"


@pytest.mark.parametrize("bad", ["progressive", "fixed_p1.5_d4", "progressive_d4@e", "pretrained@e1", "skipall_dx"])
def test_bad_run_names_raise(bad):
    with pytest.raises(ValueError, match="run"):
        names.parse_run(bad)


@pytest.mark.parametrize("bad", ["d4", "d4_N", "d4_S", "full_d4", "d4_S1-"])
def test_bad_config_names_raise(bad):
    with pytest.raises(ValueError, match="configuration"):
        names.parse_config(bad)


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_wildcards_accept_every_name_the_dag_asks_for(profile):
    P = load_params(profile=profile, overrides={"data.root": "/imagenet"})
    for run, configs in dag.runs_and_configs(P).items():
        assert re.fullmatch(names.WILDCARDS["run"], run), run
        for c in configs:
            assert re.fullmatch(names.WILDCARDS["config"], c), c
            names.subnet_of(c, dag.depth(P), dag.num_scales(P))   # and each one is a valid subnet
    for run in dag.trained_runs(P):
        assert re.fullmatch(names.TRAINED_RUN_WILDCARD, run)
    assert not re.fullmatch(names.TRAINED_RUN_WILDCARD, "pretrained")
    assert not re.fullmatch(names.TRAINED_RUN_WILDCARD, "progressive_d4@e1")   # snapshots are no train job
    assert not re.fullmatch(names.WILDCARDS["config"], "d4_N6/extra")


def test_seed_replicas_parse_and_keep_their_family():
    r = names.parse_run(names.with_seed(names.fixed_ratio(0.2, 16), 3))
    assert (r.name, r.kind, r.p, r.subnet_depth, r.seed, r.family) == ("fixed_p0.2_d16_s3", "fixed", 0.2, 16, 3,
                                                                       "fixed_p0.2_d16")
    snap = names.parse_run("progressive_d6_s1@e2")
    assert (snap.base, snap.family, snap.epoch, snap.seed) == ("progressive_d6_s1", "progressive_d6@e2", 2, 1)
    assert names.parse_run("skipall_d4").family == "skipall_d4" and names.parse_run("skipall_d4").seed is None
    assert re.fullmatch(names.TRAINED_RUN_WILDCARD, "progressive_d6_s12")
    for bad in ("progressive_d6_s", "progressive_d6_sx", "pretrained_s1"):
        with pytest.raises(ValueError, match="another seed adds _s<seed>"):
            names.parse_run(bad)


def test_replica_seeds_add_the_claims_trainings_and_nothing_else():
    """train.replica_seeds: every training a claim compares (Figure 2a, Tables 5 and 8) again
    with each seed, scored on its base run's configurations; no snapshots, no Table 1."""
    P = load_params(profile="tiny")
    plain = dag.runs_and_configs(P)
    assert dag.table_runs(P)["findings"] == {}
    R = load_params(profile="tiny", overrides={"train.replica_seeds": [1, 2]})
    runs = dag.runs_and_configs(R)
    replicas = {r: c for r, c in runs.items() if r not in plain}
    bases = {r for r in plain if r != names.PRETRAINED and "@" not in r}
    assert set(replicas) == {names.with_seed(b, s) for b in bases for s in (1, 2)}
    for r, cfgs in replicas.items():
        assert cfgs == plain[names.parse_run(r).family]
        assert re.fullmatch(names.TRAINED_RUN_WILDCARD, r) and dag.snapshot_epochs(R, r) == []
    assert set(dag.trained_runs(R)) == set(dag.trained_runs(P)) | set(replicas)
    assert {r: c for r, c in runs.items() if r in plain} == plain
