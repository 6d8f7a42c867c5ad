"""params.yaml: named profiles, validated before anything runs.

`load_params()` returns the active profile as a plain dict (plus `profile` and
`config_hash`). A bad value stops with one line naming the key, e.g.
`params.yaml: profiles.tiny.train.batch_size: 0 is less than the minimum of 1`.

Inside `reading_for(command)` (the CLI wraps every command in it) a stage gets only the
keys variant.dag.STAGE_PARAMS declares for it: reading any other key raises, so the
declaration that Snakemake and DVC hash to decide staleness cannot drift from the code.
"""
from __future__ import annotations

import collections.abc
import contextlib
import contextvars
import copy
import difflib
import hashlib
import json
import math
import os
import re
from pathlib import Path

import jsonschema
import yaml

DEFAULT_PARAMS = "params.yaml"
SCHEMA = Path(__file__).with_name("params.schema.json")   # installed with the package


class ParamsError(ValueError):
    """params.yaml cannot be used; the message names the file and the key."""


TOP_LEVEL = ("profile", "profiles")
DATA_ROOT_ENV = "VARIANT_DATA_ROOT"   # the Snakefile's --config data_root, for every job
_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")   # what YAML 1.2 reads as a float


def _schema() -> dict:
    return json.loads(SCHEMA.read_text())


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one
    silently, so a second `lr:` pasted lower down would win unseen."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *anchor` merges, it is no key
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, collections.abc.Hashable):   # SafeConstructor reports those
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"line {line}: duplicate key {key!r} (first on line {seen[key]}; keep one)")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path):
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.constructor.ConstructorError as e:
        if e.problem and e.problem.startswith("line "):   # ours: already says where
            raise ParamsError(f"{path}: {e.problem}") from None
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def check_device(device: str, where: str) -> None:
    """A CUDA device this machine lacks stops a stage before any work, naming where it was
    asked for (torch would fail deep inside the stage, or a stage quietly run on the CPU)."""
    if not str(device).startswith("cuda"):
        return
    import torch
    if not torch.cuda.is_available():
        raise ValueError(f"{where}: {device!r}, but no CUDA device is available on this machine "
                         "(set device: cpu in params, or pass --device cpu)")
    index = str(device).partition(":")[2]
    if index.isdigit() and int(index) >= torch.cuda.device_count():
        raise ValueError(f"{where}: {device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")


def export_data_root(root) -> None:
    """Hand `--config data_root` to every job through the environment (the Snakefile
    declares it in `envvars:`, so cluster executors pass it on)."""
    os.environ[DATA_ROOT_ENV] = str(root)


def config_hash(cfg: dict) -> str:
    """Short hash of the resolved profile: every result row records it."""
    body = {k: v for k, v in cfg.items() if k not in ("config_hash",)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_params(path: str | os.PathLike = DEFAULT_PARAMS, profile: str | None = None,
                overrides: dict | None = None) -> dict:
    """The active profile of params.yaml: `profile` argument, else $VARIANT_PROFILE, else
    the file's `profile` key. `overrides` are dotted keys, e.g. {"data.root": "/imagenet"};
    $VARIANT_DATA_ROOT (DATA_ROOT_ENV), when set, overrides data.root."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file (run from the repository root, or pass --params)")
    doc = _read_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles"), dict):
        raise ParamsError(f"{path}: expected a mapping with a `profiles` key")
    for key in doc:
        if key not in TOP_LEVEL:
            raise ParamsError(f"{path}: unknown top-level key {key!r} ({_did_you_mean(key, TOP_LEVEL)})")
    name = profile or os.environ.get("VARIANT_PROFILE") or doc.get("profile", "tiny")
    if name not in doc["profiles"]:
        raise ParamsError(f"{path}: profile {name!r} is not defined under `profiles` "
                          f"(known: {', '.join(doc['profiles'])})")
    overrides = dict(overrides or {})
    if os.environ.get(DATA_ROOT_ENV):   # set by the Snakefile from --config data_root=...
        overrides.setdefault("data.root", os.environ[DATA_ROOT_ENV])
    cfg = _resolve(doc, name, overrides, path)
    if cfg.get("shares_base") is not None:
        _check_shared_base(doc, cfg, name, path)
    cfg["profile"] = name
    cfg["config_hash"] = config_hash(cfg)   # of the whole profile, whatever the stage reads
    stage = _ACTIVE_STAGE.get()
    if stage is not None:
        from variant.dag import ALWAYS_ALLOWED, STAGE_PARAMS   # dag imports this module
        if stage in STAGE_PARAMS:
            return StageParams(cfg, stage, [*ALWAYS_ALLOWED, *STAGE_PARAMS[stage]])
    return cfg


def _resolve(doc: dict, name: str, overrides: dict, path: Path) -> dict:
    """Profile `name` of the params document with `overrides` set, validated."""
    cfg = copy.deepcopy(doc["profiles"][name])
    for dotted, value in overrides.items():
        _set(cfg, dotted, value, f"{path}: override {dotted}")
    where = f"{path}: profiles.{name}"
    phases = cfg.get("train", {}).get("phases")
    if isinstance(phases, dict):   # YAML reads `16:` as an int key; JSON schema wants strings
        if len({str(k) for k in phases}) < len(phases):
            raise ParamsError(f"{where}.train.phases: a depth is given twice (as 16 and '16')")
        cfg["train"]["phases"] = {str(k): v for k, v in phases.items()}
    _check_finite(cfg, where)
    e = _first_error(cfg)
    if e is not None:
        key = ".".join(str(p) for p in e.absolute_path)
        raise ParamsError(f"{where}{'.' + key if key else ''}: {_message(e)}")
    _check_semantics(cfg, where)
    return cfg


def _check_shared_base(doc: dict, cfg: dict, name: str, path: Path):
    """A profile with `shares_base: B` uses B's data, extractor, reference statistics and
    VQVAE as B made them: B must make its own, and every key they depend on must agree."""
    from variant.dag import SHARED_BASE_KEYS, lookup   # dag imports this module
    base, where = cfg["shares_base"], f"{path}: profiles.{name}.shares_base"
    if base not in doc["profiles"]:
        raise ParamsError(f"{where}: profile {base!r} is not defined under `profiles` "
                          f"(known: {', '.join(doc['profiles'])})")
    if base == name or doc["profiles"][base].get("shares_base") is not None:
        raise ParamsError(f"{where}: {base!r} must be a profile that makes its own base (no shares_base of its own)")
    for who, section in ((name, cfg["data"]), (base, doc["profiles"][base].get("data") or {})):
        if section.get("source") != "synthetic":
            raise ParamsError(f"{where}: profile {who!r} has data.source {section.get('source')!r}; only "
                              "synthetic profiles make the data and VQVAE a base shares")
    mine_cfg, base_cfg = _resolve(doc, name, {}, path), _resolve(doc, base, {}, path)   # as params.yaml has them
    for key in SHARED_BASE_KEYS:
        for leaf, mine, theirs in _differences(key, lookup(mine_cfg, key), lookup(base_cfg, key)):
            raise ParamsError(f"{path}: profiles.{name}.{leaf} is {mine!r}, but profiles.{base}.{leaf} is "
                              f"{theirs!r}: the files of the shared base (shares_base: {base}) depend on it; "
                              "make the two equal")


def _differences(key: str, a, b):
    """(dotted leaf, a's value, b's value) where two params values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            yield from _differences(f"{key}.{k}", a.get(k), b.get(k))
    elif a != b:
        yield key, a, b


# ---- what a stage may read --------------------------------------------------------------------

_ACTIVE_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("variant_stage", default=None)


@contextlib.contextmanager
def reading_for(command: str | None):
    """While active, load_params() returns only what variant.dag.STAGE_PARAMS[command]
    declares; a command that is no pipeline stage (verify-golden, bench, ...) reads freely."""
    token = _ACTIVE_STAGE.set(command)
    try:
        yield
    finally:
        _ACTIVE_STAGE.reset(token)


class StageParams(dict):
    """A section of the profile holding only the declared keys below it. Reading an
    undeclared key, by [], .get() or `in`, raises ParamsError naming the stage and key; a
    declared key a profile leaves out reads as missing (KeyError, .get's default)."""

    def __init__(self, source: dict, stage: str, declared: list[str], prefix: str = ""):
        super().__init__()
        self._stage, self._prefix = stage, prefix
        paths = [tuple(k.split(".")) for k in declared]
        self._allowed = {p[0] for p in paths}
        for key in [k for k in source if k in self._allowed]:   # the profile's order
            below = [".".join(p[1:]) for p in paths if p[0] == key]
            value = source[key]
            if "" in below or not isinstance(value, dict):   # the whole section is declared
                self[key] = copy.deepcopy(value)
            else:
                self[key] = StageParams(value, stage, below, f"{prefix}{key}.")

    def _check(self, key):
        if key not in self._allowed:
            raise ParamsError(f"stage {self._stage} read params key '{self._prefix}{key}' that "
                              f"variant.dag.STAGE_PARAMS['{self._stage}'] does not declare")

    def __missing__(self, key):
        self._check(key)
        raise KeyError(key)

    def get(self, key, default=None):
        self._check(key)
        return super().get(key, default)

    def __contains__(self, key):
        self._check(key)
        return super().__contains__(key)

    def setdefault(self, key, default=None):
        self._check(key)
        return super().setdefault(key, default)

    def pop(self, key, *default):
        self._check(key)
        return super().pop(key, *default)


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"


def _check_finite(node, where: str):
    """NaN and infinity pass every JSON-schema bound (comparisons with NaN are false), and
    YAML reads `.nan`/`.inf` as floats: refuse them anywhere in the profile."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ParamsError(f"{where}: {node} is not a finite number (give a number, e.g. 1.0e-4)")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        _check_finite(v, f"{where}.{k}")


def _first_error(cfg: dict) -> jsonschema.ValidationError | None:
    """jsonschema's most relevant error, except that a misspelt key beats the required key
    it misses: `batch_sise` should be reported as unknown, not `batch_size` as missing."""
    schema = _schema()
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(cfg))
    best = jsonschema.exceptions.best_match(errors)
    if best is not None and best.validator == "required":
        unknown = [e for e in errors if e.validator == "additionalProperties" and e.absolute_path == best.absolute_path]
        best = unknown[0] if unknown else best
    return best


def _message(e: jsonschema.ValidationError) -> str:
    """jsonschema's message, made actionable where it is not."""
    if e.validator == "additionalProperties" and isinstance(e.instance, dict) and e.validator_value is False:
        known = list(e.schema.get("properties", {}))
        patterns = list(e.schema.get("patternProperties", {}))
        extra = [k for k in e.instance if k not in known and not any(re.search(p, str(k)) for p in patterns)]
        if extra:
            hint = _did_you_mean(extra[0], known) if known else f"keys must match {', '.join(patterns)}"
            return f"unknown key {extra[0]!r} ({hint})"
    if e.validator == "type" and isinstance(e.instance, str) and _YAML11_FLOAT.match(e.instance):
        # PyYAML follows YAML 1.1: 1e-4 (no dot, or no exponent sign) is a string, 1.0e-4 a float
        mantissa, _, exponent = e.instance.lower().partition("e")
        sign = "" if exponent[0] in "+-" else "+"
        fixed = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign}{exponent}"
        types = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
        if "number" not in types and float(e.instance).is_integer():
            fixed = str(int(float(e.instance)))
        return f"{e.message} (YAML reads {e.instance} as a string: write {fixed})"
    if "errorMessage" in e.schema:   # the schema's own wording of a pattern or bound
        return f"{e.instance!r} {e.schema['errorMessage']}"
    return e.message


def _set(cfg: dict, dotted: str, value, where: str):
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        if not isinstance(node.get(p), dict):
            raise ParamsError(f"{where}: {p!r} is not a section of the profile")
        node = node[p]
    node[leaf] = value


# the `resources` entries (workflow/rules: resources(NAME)) of the stages that compute on
# params `device`: a SLURM job of theirs without a GPU stops at its first line on `cuda`
GPU_STAGES = ("tokenize", "train", "sample", "evaluate", "profile")


def _check_semantics(cfg: dict, where: str):
    """What a schema cannot say: values that must agree with each other."""
    if str(cfg["device"]).startswith("cuda"):
        res = cfg["resources"]
        for name in GPU_STAGES:
            if not (res["default"] | res.get(name, {})).get("gpus"):
                how = "its entry sets gpus: 0" if "gpus" in res.get(name, {}) else \
                    "it has no entry, and resources.default gives none"
                raise ParamsError(f"{where}.resources.{name}.gpus: the {name} stage computes on device "
                                  f"{cfg['device']}, but {how}: its SLURM jobs would have no GPU (give it gpus: 1)")
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
    for d, lengths in train["phases"].items():
        if sum(lengths) < 1:
            raise ParamsError(f"{where}.train.phases.{d}: {lengths} trains no epoch (give a phase at least one)")
    for key, n in [("train.bridge", train["bridge"])] + [("sample.bridges", b) for b in sample["bridges"]]:
        if not 0 <= n <= K:
            raise ParamsError(f"{where}.{key}: bridge size {n} is outside 0..{K} for {K} scales")
    if cfg["evaluate"].get("bootstrap") == 1:
        raise ParamsError(f"{where}.evaluate.bootstrap: 1 resample gives no interval (0 for none, or at least 2)")
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
