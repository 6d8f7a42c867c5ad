"""params.yaml: named profiles, validated before anything runs.

`load_params()` returns the active profile as a plain dict (plus `profile` and
`config_hash`). A bad value stops with one line naming the key, e.g.
`params.yaml: profiles.tiny.train.batch_size: 0 is less than the minimum of 1`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import jsonschema
import yaml

DEFAULT_PARAMS = "params.yaml"
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.json"


class ParamsError(ValueError):
    """params.yaml cannot be used; the message names the file and the key."""


def _schema() -> dict:
    return json.loads(SCHEMA.read_text())


def config_hash(cfg: dict) -> str:
    """Short hash of the resolved profile: every result row records it."""
    body = {k: v for k, v in cfg.items() if k not in ("config_hash",)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_params(path: str | os.PathLike = DEFAULT_PARAMS, profile: str | None = None,
                overrides: dict | None = None) -> dict:
    """The active profile of params.yaml: `profile` argument, else $VARIANT_PROFILE, else
    the file's `profile` key. `overrides` are dotted keys, e.g. {"data.root": "/imagenet"};
    $VARIANT_DATA_ROOT, when set, overrides data.root."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file (run from the repository root, or pass --params)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles"), dict):
        raise ParamsError(f"{path}: expected a mapping with a `profiles` key")
    name = profile or os.environ.get("VARIANT_PROFILE") or doc.get("profile", "tiny")
    if name not in doc["profiles"]:
        raise ParamsError(f"{path}: profile {name!r} is not defined under `profiles` "
                          f"(known: {', '.join(doc['profiles'])})")
    cfg = copy.deepcopy(doc["profiles"][name])
    overrides = dict(overrides or {})
    if os.environ.get("VARIANT_DATA_ROOT"):   # set by the Snakefile from --config data_root=...
        overrides.setdefault("data.root", os.environ["VARIANT_DATA_ROOT"])
    for dotted, value in overrides.items():
        _set(cfg, dotted, value, f"{path}: override {dotted}")
    where = f"{path}: profiles.{name}"
    phases = cfg.get("train", {}).get("phases")
    if isinstance(phases, dict):   # YAML reads `16:` as an int key; JSON schema wants strings
        cfg["train"]["phases"] = {str(k): v for k, v in phases.items()}
    try:
        jsonschema.validate(cfg, _schema())
    except jsonschema.ValidationError as e:
        key = ".".join(str(p) for p in e.absolute_path)
        raise ParamsError(f"{where}{'.' + key if key else ''}: {e.message}") from None
    _check_semantics(cfg, where)
    cfg["profile"] = name
    cfg["config_hash"] = config_hash(cfg)
    return cfg


def _set(cfg: dict, dotted: str, value, where: str):
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        if not isinstance(node.get(p), dict):
            raise ParamsError(f"{where}: {p!r} is not a section of the profile")
        node = node[p]
    node[leaf] = value


def _check_semantics(cfg: dict, where: str):
    """What a schema cannot say: values that must agree with each other."""
    D, K = cfg["model"]["var"]["depth"], len(cfg["model"]["patch_nums"])
    train, sample = cfg["train"], cfg["sample"]
    for key, depths in (("train.subnet_depths", train["subnet_depths"]),
                        ("train.skip_all_depths", train["skip_all_depths"]),
                        ("train.fixed_ratios.depth", [train["fixed_ratios"]["depth"]]),
                        ("sample.table1_depth", [sample["table1_depth"]])):
        bad = [d for d in depths if not 2 <= d < D]
        if bad:
            raise ParamsError(f"{where}.{key}: subnet depth {bad[0]} is outside 2..{D - 1} for a depth-{D} model")
    for d in train["subnet_depths"]:
        if str(d) not in {str(k) for k in train["phases"]}:
            raise ParamsError(f"{where}.train.phases: no phase lengths for subnet depth {d}")
    for key, n in [("train.bridge", train["bridge"])] + [("sample.bridges", b) for b in sample["bridges"]]:
        if not 0 <= n <= K:
            raise ParamsError(f"{where}.{key}: bridge size {n} is outside 0..{K} for {K} scales")
    bad = [c for c in sample["fig7"]["classes"] if c >= cfg["data"]["num_classes"]]
    if bad:
        raise ParamsError(f"{where}.sample.fig7.classes: class {bad[0]} is outside 0..{cfg['data']['num_classes'] - 1}")
    if cfg["data"]["source"] == "imagefolder" and not cfg["data"].get("root"):
        raise ParamsError(f"{where}.data.root is not set: point it at ImageNet's train split in "
                          "ImageFolder layout, e.g. `--config data_root=/datasets/imagenet/train`")


def phases_of(cfg: dict, depth: int) -> tuple[int, int, int]:
    """(E1, E2, E3) epochs of Table 7 for subnet depth `depth` (YAML keys may be int or str)."""
    phases = {int(k): v for k, v in cfg["train"]["phases"].items()}
    return tuple(phases[depth])
