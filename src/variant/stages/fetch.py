"""The `fetch` stage: the released checkpoints (paper) or their tiny stand-ins, and tiny data.

Commands (each registered by `add_parser`):

* `variant fetch --profile P --out-dir artifacts/P/pretrained [--data DIR]`:
  - paper: the released files `fetch.files` of the Hugging Face repo `fetch.repo_id` at the
    pinned commit `fetch.revision` (huggingface_hub: resume, retries, HF_ENDPOINT,
    HF_HUB_OFFLINE), and the ADM reference batch from `fetch.reference_url` (pooch), into
    the out-dir. Files already there (an earlier run, or put there by hand) are not
    downloaded again. Each file's sha256 is checked against params `fetch.sha256` when
    given there, else against the one fetch.json recorded when the file first arrived.
    Offline, unpinned or unreachable, one error names every missing file, where it comes
    from and the path to put it at by hand; nothing waits on retries that cannot succeed.
    `vae.pth` and `var.pth` (the names later stages read) are then hard links to
    vae_ch160v4096z32.pth and var_d{model.var.depth}.pth: the same bytes at no extra disk
    space, a regular file that cannot dangle; a copy where the file system has no hard
    links. Both are loaded to check them.
  - synthetic profiles: pre-trains a small VQVAE and VAR on the generated train set
    (variant.tiny.pretrain); fetch.json records their sha256, losses and codebook usage.
    A profile with params shares_base pre-trains only its VAR, with the base profile's
    VQVAE (`--vae`, default the base's vae.pth), which fetch.json names by sha256.
* `variant make-data --profile tiny --split train|eval --out DIR`: the synthetic ImageFolder
  set (variant.tiny.data.make_split).
* `variant train-extractor --profile tiny --data DIR --out artifacts/tiny/feature_extractor.pth`:
  TinyFeatureNet (variant.tiny.extractor).

Every output is written atomically. Errors a user can fix raise FetchError (a ValueError)
with one line naming the file or key.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from variant import dag
from variant.config import load_params
from variant.models.checkpoint import build_vae, build_var, check_profile, read_state_dict, save_state_dict
from variant.options import params_options
from variant.util.atomic import link_or_copy, write_text
from variant.util.hashing import sha256_cached

MANIFEST = "fetch.json"
VAE_FILE = "vae_ch160v4096z32.pth"
# No fetch command reads ImageNet, so data.root is given this placeholder explicitly: an
# unset root is no error here (the tokenize stage, which reads it, checks it)
DATA_ROOT_UNUSED = "(not read by fetch)"


class FetchError(ValueError):
    """A fetch-stage problem the user can fix; the message names the file, URL or key."""


class DownloadError(FetchError):
    """Files could not be downloaded; the message says where to put each by hand."""


class ChecksumError(FetchError):
    """A file's sha256 differs from the recorded or expected one."""


def _log(msg: str):
    print(msg, flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -----------------------------------------------------------------------------
# fetch.json


def read_manifest(out_dir) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return {"files": {}}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FetchError(f"{path}: not valid JSON ({e}); delete it to record the checksums afresh") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files", {}), dict):
        raise FetchError(f"{path}: expected an object with a `files` mapping")
    doc.setdefault("files", {})
    return doc


def write_manifest(out_dir, doc: dict):
    write_text(Path(out_dir) / MANIFEST, json.dumps(doc, indent=2, sort_keys=True) + "\n")

# -----------------------------------------------------------------------------
# downloading


@dataclass(frozen=True)
class Released:
    """One file to fetch: its name in the out-dir, and where it comes from."""

    name: str
    url: str                     # where to get it by hand
    repo_id: str | None = None   # a Hugging Face repo: downloaded by hf_hub_download
    revision: str | None = None
    endpoint: str | None = None


def released_files(cfg: dict) -> list[Released]:
    """The released checkpoints (fetch.files of fetch.repo_id) and the reference batch."""
    fetch = cfg["fetch"]
    for key in ("repo_id", "files"):
        if not fetch.get(key):
            raise FetchError(f"params: fetch.{key} is not set for profile {cfg.get('profile')!r}")
    var_file = f"var_d{cfg['model']['var']['depth']}.pth"
    for name in (VAE_FILE, var_file):
        if name not in fetch["files"]:
            raise FetchError(f"params: fetch.files lacks {name} (needed for vae.pth/var.pth)")
    from huggingface_hub import constants, hf_hub_url
    revision, endpoint = fetch.get("revision"), constants.ENDPOINT   # HF_ENDPOINT, read now
    files = [Released(n, hf_hub_url(fetch["repo_id"], n, revision=revision or "main", endpoint=endpoint),
                      fetch["repo_id"], revision, endpoint) for n in fetch["files"]]
    if fetch.get("reference_url"):
        files.append(Released(fetch["reference_batch"], fetch["reference_url"]))
    return files


def _unreachable(url: str, timeout: float) -> str | None:
    """Why `url`'s host cannot be reached (one connection attempt), or None: a machine with
    no network fails here at once, rather than after each file's retries."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"cannot reach {parts.hostname}:{port} ({type(e).__name__}: {e})"
    return None


def _why_not(f: Released, offline: bool, timeout: float, probed: dict) -> str | None:
    """Why `f` cannot be downloaded now, or None to try it."""
    if f.repo_id and not f.revision:
        return ("params fetch.revision is not pinned: set it to a commit of "
                f"{f.repo_id} (see the comment at fetch.revision in params.yaml)")
    if offline:
        return "offline: HF_HUB_OFFLINE is set"
    host = urllib.parse.urlsplit(f.url).netloc
    if host not in probed:
        probed[host] = _unreachable(f.url, timeout)
    return probed[host]


def _download(f: Released, out_dir: Path, progress: bool, timeout: float) -> None:
    """Put `f` at out_dir/f.name; raises whatever the library raises."""
    if f.repo_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
        (enable_progress_bars if progress else disable_progress_bars)()
        got = Path(hf_hub_download(f.repo_id, f.name, revision=f.revision, local_dir=out_dir,
                                   endpoint=f.endpoint, etag_timeout=timeout))
        if got.resolve() != (out_dir / f.name).resolve():   # local_dir puts it there; be sure
            shutil.move(got, out_dir / f.name)
    else:
        import pooch
        pooch.retrieve(f.url, known_hash=None, fname=f.name, path=out_dir, progressbar=progress,
                       downloader=pooch.HTTPDownloader(progressbar=progress, timeout=timeout))


def _hand_fix(f: Released, out_dir: Path, reason: str) -> str:
    return f"{f.name} (from {f.url}: {reason}): put it at {(out_dir / f.name).resolve()}"


def download_missing(files: list[Released], out_dir: Path, *, progress: bool = True,
                     timeout: float = 10.0) -> list[str]:
    """Download every file not in out_dir; the names downloaded. Raises one DownloadError
    naming every file still missing, its origin and where to put it by hand."""
    from huggingface_hub import constants
    offline = bool(constants.HF_HUB_OFFLINE)
    failed, probed, downloaded = [], {}, []
    for f in files:
        if (out_dir / f.name).is_file():
            continue
        reason = _why_not(f, offline, timeout, probed)
        if reason is None:
            _log(f"  {f.name}: downloading {f.url}")
            try:
                _download(f, out_dir, progress, timeout)
                downloaded.append(f.name)
                continue
            except Exception as e:  # noqa: BLE001 - every failure is reported below, per file
                reason = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        _log(f"  {f.name}: FAILED: {reason}")
        failed.append(_hand_fix(f, out_dir, reason))
    if failed:
        raise DownloadError(f"{len(failed)} file{'s' if len(failed) > 1 else ''} missing: " + " | ".join(failed)
                            + "; then rerun `variant fetch`, which verifies and records them")
    return downloaded


def verify_file(f: Released, out_dir: Path, manifest: dict, expected: str | None, downloaded: bool) -> dict:
    """Check out_dir/f.name against params fetch.sha256 or fetch.json; its manifest entry."""
    path, entry = out_dir / f.name, manifest["files"].get(f.name) or {}
    recorded = entry.get("sha256")
    if expected and recorded and expected != recorded:
        raise ChecksumError(f"{out_dir / MANIFEST}: {f.name} is recorded with sha256 {recorded} "
                            f"but params fetch.sha256 expects {expected}")
    want = expected or recorded
    where = "params fetch.sha256" if expected else f"{out_dir / MANIFEST}"
    sha = sha256_cached(path)
    if want and sha != want:
        if downloaded:
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            raise ChecksumError(f"{f.url}: the download has sha256 {sha}, but {where} says {want}; "
                                f"kept it as {bad}")
        raise ChecksumError(f"{path}: sha256 {sha} does not match {want} recorded in {where}; "
                            f"the file is corrupt or was replaced: delete it and rerun `variant fetch`")
    if not want:
        _log(f"  {f.name}: no sha256 in params fetch.sha256; recording {sha} in {MANIFEST}")
    source = "download" if downloaded else entry.get("source", "present before the first fetch (put there by hand?)")
    return {"sha256": sha, "size": path.stat().st_size, "url": f.url, "source": source,
            "recorded_at": entry.get("recorded_at") if recorded == sha else _now()}


def load_and_check(var_path, vae_path, cfg: dict) -> dict:
    """Load var.pth/vae.pth strictly and check they fit each other and params `model`."""
    var = build_var(read_state_dict(var_path), str(var_path))
    vae = build_vae(read_state_dict(vae_path), var.patch_nums, str(vae_path))
    check_profile(var, vae, cfg, var_path, vae_path)
    info = {"var_params": sum(p.numel() for p in var.parameters()),
            "vae_params": sum(p.numel() for p in vae.parameters())}
    del var, vae
    return info


def fetch_released(cfg: dict, out_dir, *, check_load: bool = True, progress: bool = True,
                   timeout: float = 10.0) -> dict:
    """The paper profile: download, verify, record, link vae.pth/var.pth, check they load."""
    out_dir = Path(out_dir)
    files = released_files(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    manifest["profile"] = cfg.get("profile")
    _log(f"fetch: {len(files)} files into {out_dir}")
    downloaded = set(download_missing(files, out_dir, progress=progress, timeout=timeout))
    expected = cfg["fetch"].get("sha256") or {}
    for f in files:
        manifest["files"][f.name] = verify_file(f, out_dir, manifest, expected.get(f.name), f.name in downloaded)
        write_manifest(out_dir, manifest)   # whatever was verified so far stays recorded
    var_file = f"var_d{cfg['model']['var']['depth']}.pth"
    for link, src in (("vae.pth", VAE_FILE), ("var.pth", var_file)):
        how = link_or_copy(out_dir / src, out_dir / link)
        manifest["files"][link] = dict(manifest["files"][src], source=f"{how} of {src}")
        _log(f"  {link} -> {src} ({how})")
    write_manifest(out_dir, manifest)
    if check_load:
        _log("  loading var.pth and vae.pth")
        manifest["loaded"] = load_and_check(out_dir / "var.pth", out_dir / "vae.pth", cfg)
        write_manifest(out_dir, manifest)
    _log(f"fetch: done, sha256 in {out_dir / MANIFEST}")
    return manifest

# -----------------------------------------------------------------------------
# synthetic profiles: pre-training, make-data, train-extractor


KEPT_VQVAE = ".vqvae-pretrained.pth"   # a pre-trained VQVAE kept until the VAR is done too
KEPT_VAR = ".var-pretraining.pth"      # the VAR's training state, saved as it goes


def pretrain_tiny(cfg: dict, data_dir, out_dir, log=_log, shared_vae=None) -> dict:
    """Pre-train the tiny VQVAE and VAR on `data_dir`; write vae.pth, var.pth, fetch.json.
    shared_vae: the base profile's vae.pth (params shares_base): only the VAR is trained,
    and fetch.json records which VQVAE it was trained with."""
    from variant.tiny.pretrain import pretrain
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = out_dir / KEPT_VQVAE, out_dir / KEPT_VAR   # not outputs: Snakemake leaves them when the job is cut
    manifest = {"profile": cfg.get("profile"), "files": {}}
    given = None
    if shared_vae is not None:
        given, manifest["shared"] = _shared_vqvae(cfg, Path(shared_vae))
        log(f"fetch ({cfg.get('profile')}): the VQVAE is {shared_vae} (shares_base), sha256 "
            f"{manifest['shared']['vae.pth']['sha256'][:16]}")
    vae, var, manifest["training"] = pretrain(cfg, data_dir, log, keep_vqvae=keep[0], keep_var=keep[1], vae=given)
    written = [("var.pth", var)] if given else [("vae.pth", vae), ("var.pth", var)]
    for name, model in written:
        sha = save_state_dict(model, out_dir / name)
        manifest["files"][name] = {"sha256": sha, "size": (out_dir / name).stat().st_size,
                                   "source": "pre-trained", "recorded_at": _now()}
    data_manifest = data_dir / "manifest.json"
    if data_manifest.is_file():
        manifest["data_sha256"] = json.loads(data_manifest.read_text()).get("sha256")
    manifest["loaded"] = load_and_check(out_dir / "var.pth", shared_vae or out_dir / "vae.pth", cfg)
    write_manifest(out_dir, manifest)
    for f in keep:
        f.unlink(missing_ok=True)
    log(f"fetch ({cfg.get('profile')}): wrote {', '.join(str(out_dir / n) for n, _ in written)}, {out_dir / MANIFEST}")
    return manifest


def _base_shas(manifest: dict) -> dict[str, str]:
    """{file: sha256} of a base record: what the fetch pre-trained, the VQVAE it shares and
    the feature extractor its FIDs are measured with."""
    parts = {**manifest["files"], **manifest.get("shared", {}), **manifest.get("extractor", {})}
    return {n: f["sha256"] for n, f in parts.items()}


def check_base(cfg: dict, log=_log) -> None:
    """The pre-trained base in artifacts/ (VQVAE, VAR, feature extractor) against the one the
    committed rows were made on (dag.base_record; a depth arm also against its base
    profile's record of the VQVAE and extractor it shares). A base lost with its machine
    is restored from a copy or pre-trained again (deterministic on the same GPU model):
    rows go on only on the same bytes. Without a record yet, this base becomes the
    record: its fetch.json with the extractor's sha256 added."""
    _require_synthetic(cfg, "check-base")
    made, record = Path(dag.fetch_record(cfg)), Path(dag.base_record(cfg))
    m = read_manifest(made.parent)
    if not m["files"]:
        raise FetchError(f"{made}: no pre-trained base recorded (run `variant fetch --profile {cfg['profile']}`)")
    extractor = Path(dag.feature_extractor(cfg))
    if not extractor.is_file():
        raise FetchError(f"{extractor}: no feature extractor (run `variant train-extractor --profile {cfg['profile']} "
                         f"--data {dag.data_dir(cfg, 'train')} --out {extractor}`)")
    extractor_sha = sha256_cached(extractor)
    m["extractor"] = {extractor.name: {"sha256": extractor_sha, "path": str(extractor)}}
    wrong = [record] if record.is_file() and _base_shas(read_manifest(record.parent)) != _base_shas(m) else []
    if dag.shares_base(cfg):
        base = Path(dag.base_record({"profile": dag.shares_base(cfg)}))
        shared = {"vae.pth": m["shared"]["vae.pth"]["sha256"], extractor.name: extractor_sha}
        if base.is_file():
            recorded = _base_shas(read_manifest(base.parent))
            if any(recorded.get(n) != s for n, s in shared.items()):
                wrong.append(base)
    if wrong:
        raise ChecksumError(f"{made}: this pre-trained base is not the one the committed rows were made on "
                            f"({', '.join(map(str, wrong))}): compare their sha256 (another GPU model or code); "
                            "retire those rows and the record to start anew")
    if record.is_file():
        log(f"check-base: {made} is the base of {record}")
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    write_text(record, json.dumps(m, indent=2) + "\n")
    log(f"check-base: {record} records this base ({', '.join(f'{n} {s[:12]}' for n, s in _base_shas(m).items())})")


def _shared_vqvae(cfg: dict, path: Path):
    """(the VQVAE at `path` and its training record, fetch.json's entry for it): the base
    profile's pre-trained VQVAE, with the record its own fetch wrote beside it."""
    if not path.is_file():
        raise FetchError(f"{path}: no such VQVAE (shares_base: run the fetch of profile "
                         f"{cfg.get('shares_base')!r} first)")
    base = read_manifest(path.parent)
    recorded = base["files"].get(path.name, {}).get("sha256")
    sha = sha256_cached(path)
    if recorded and recorded != sha:
        raise ChecksumError(f"{path}: sha256 {sha} differs from {recorded} in {path.parent / MANIFEST}: "
                            "the base profile's VQVAE was replaced after its fetch")
    vae = build_vae(read_state_dict(path), tuple(cfg["model"]["patch_nums"]), str(path)).eval()
    record = base.get("training", {}).get("vae", {})
    return (vae, record), {"vae.pth": {"path": str(path), "sha256": sha, "profile": base.get("profile")}}


def _require_synthetic(cfg: dict, command: str):
    if cfg["data"]["source"] != "synthetic":
        raise FetchError(f"{command}: profile {cfg.get('profile')!r} has data.source "
                         f"{cfg['data']['source']!r}: its images are given by data.root, nothing to make")


def make_data(cfg: dict, split: str, out, log=_log) -> dict:
    from variant.tiny.data import make_split, split_seed
    _require_synthetic(cfg, "make-data")
    manifest = make_split(cfg["data"], split, out)
    log(f"make-data: {manifest['count']} {cfg['data']['image_size']}px images ({split}, seed "
        f"{split_seed(cfg['data'], split)}) in {out}, sha256 {manifest['sha256'][:16]}")
    return manifest


def train_extractor(cfg: dict, data_dir, out, log=_log) -> dict:
    """TinyFeatureNet on data_dir, written to `out` and its record to out.json."""
    from variant.tiny.extractor import TINY, train_feature_extractor
    from variant.tiny.pretrain import training_device
    if cfg["evaluate"]["extractor"] != TINY:
        raise FetchError(f"train-extractor: profile {cfg.get('profile')!r} scores with "
                         f"{cfg['evaluate']['extractor']!r} (evaluate.extractor), nothing to train")
    with training_device(cfg) as dev:
        info = train_feature_extractor(data_dir, out, epochs=int(cfg["fetch"]["feature_extractor"]["epochs"]),
                                       seed=int(cfg["data"]["seed"]), device=dev, log=log)
    log(f"train-extractor: val accuracy {info['val_accuracy']:.3f} in {info['train_seconds']} s -> {out}")
    return info

# -----------------------------------------------------------------------------
# CLI


def _common(p):
    params_options(p)


def add_parser(sub):
    p = sub.add_parser("make-data", help="generate the tiny profile's synthetic train/eval images")
    _common(p)
    p.add_argument("--split", choices=("train", "eval"), required=True, help="which split to generate")
    p.add_argument("--out", default=None, help="output directory (default artifacts/P/data/SPLIT)")
    p.set_defaults(func=_main_make_data)

    p = sub.add_parser("fetch", help="download the released VAR/VQVAE (paper) or pre-train tiny ones")
    _common(p)
    p.add_argument("--out-dir", default=None, help="output directory (default artifacts/P/pretrained)")
    p.add_argument("--data", default=None, help="tiny: the generated train set (default artifacts/P/data/train)")
    p.add_argument("--vae", default=None,
                   help="a profile with shares_base: the base's pre-trained VQVAE (default its vae.pth)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="paper: seconds to wait for a server to answer (default 10)")
    p.add_argument("--no-progress", action="store_true", help="paper: no progress bars")
    p.set_defaults(func=_main_fetch)

    p = sub.add_parser("check-base", help="synthetic profiles: is the pre-trained base the one the committed "
                                          "rows were made on (results/P/fetch.json)?")
    _common(p)
    p.set_defaults(func=lambda args: check_base(_cfg(args)) or 0)

    p = sub.add_parser("train-extractor", help="train the tiny profile's FID feature network")
    _common(p)
    p.add_argument("--data", default=None, help="the generated train set (default artifacts/P/data/train)")
    p.add_argument("--out", default=None, help="weights file (default artifacts/P/feature_extractor.pth)")
    p.set_defaults(func=_main_train_extractor)


def _cfg(args) -> dict:
    return load_params(args.params, args.profile, {"data.root": DATA_ROOT_UNUSED})


def _main_make_data(args) -> int:
    cfg = _cfg(args)
    make_data(cfg, args.split, args.out or dag.data_dir(cfg, args.split))
    return 0


def _main_fetch(args) -> int:
    cfg = _cfg(args)
    out_dir = args.out_dir or dag.pretrained_dir(cfg)
    if args.vae and not dag.shares_base(cfg):
        raise FetchError(f"fetch --vae: profile {cfg['profile']!r} pre-trains its own VQVAE "
                         "(--vae is for a profile with shares_base)")
    if cfg["data"]["source"] == "synthetic":
        shared = (args.vae or dag.pretrained_vae(cfg)) if dag.shares_base(cfg) else None
        pretrain_tiny(cfg, args.data or dag.data_dir(cfg, "train"), out_dir, shared_vae=shared)
    else:
        if args.data:
            _log("fetch: --data is only used when pre-training (tiny); ignored")
        fetch_released(cfg, out_dir, progress=not args.no_progress, timeout=args.timeout)
    return 0


def _main_train_extractor(args) -> int:
    cfg = _cfg(args)
    train_extractor(cfg, args.data or dag.data_dir(cfg, "train"), args.out or dag.feature_extractor(cfg))
    return 0
