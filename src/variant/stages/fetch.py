"""The `fetch` stage: released checkpoints (paper) or their tiny stand-ins, and tiny data.

Commands (each registered by `add_parser`):

* `variant make-data --profile tiny --split train|eval --out DIR`: the tiny profile's
  synthetic ImageFolder set (variant.tiny.data). The eval split uses the seed
  data.seed + EVAL_SEED_OFFSET, so no image of it is drawn from a train image's generator.
* `variant fetch --profile P --out-dir artifacts/P/pretrained [--data DIR]`:
  - paper: downloads every `fetch.files` from `fetch.base_url` and the ADM reference batch
    from `fetch.reference_url` into the out-dir. Partial downloads are resumed (HTTP Range
    into NAME.part), failures retried with exponential backoff, the file renamed into place
    only when complete. Files already present are not downloaded again.
    Checksums are trust-on-first-use: nothing here can reach the released files, so the
    module carries no table of their sha256 (we could not verify one). The sha256 of each
    file is recorded in fetch.json when it first arrives (downloaded, or put there by hand)
    and every later run checks the file against it; an optional params mapping
    `fetch.sha256: {NAME: HEX}` gives expected values to check even the first download.
    Offline or after the last retry, the error names the URL and the exact path to put the
    file at by hand; the next `fetch` verifies and records it.
    `vae.pth` and `var.pth` (the names later stages read) are then made as hard links to
    vae_ch160v4096z32.pth and var_d{model.var.depth}.pth: the same bytes and sha256 at no
    extra disk space (8 GB for d30), a regular file that cannot dangle; a copy where the
    file system has no hard links. Both are loaded with build_vae/build_var to check them.
  - tiny: pre-trains a small VQVAE, then a small VAR on the generated train set (`--data`),
    sizes from `model`, steps/batch/lr from `fetch.vae` / `fetch.var`, seeded; both written
    with checkpoint.save_state_dict (reference layout); fetch.json records their sha256,
    the losses and the codebook usage.
* `variant train-extractor --profile tiny --data DIR --out artifacts/tiny/feature_extractor.pth`:
  TinyFeatureNet via metrics.train_feature_extractor.

Every output is written atomically (temporary name, then rename), so a rerun overwrites
cleanly and a crash leaves no half file. Errors a user can fix raise FetchError (a
ValueError) or FileNotFoundError with one line naming the file or key.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import http.client
import json
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from variant.util.atomic import write_text
from variant.tiny import data as vdata
from variant.models.checkpoint import (CheckpointError, build_vae, build_var, check_profile, read_state_dict,
                         save_state_dict, sha256_file)
from variant.config import DEFAULT_PARAMS, ParamsError, load_params
from variant.models import VAR, VQVAE

MANIFEST = "fetch.json"
EVAL_SEED_OFFSET = 1_000_003   # eval split seed = data.seed + this: disjoint from train
VAE_FILE = "vae_ch160v4096z32.pth"


class FetchError(ValueError):
    """A fetch-stage problem the user can fix; the message names the file, URL or key."""


class DownloadError(FetchError):
    """A file could not be downloaded; the message says where to put it by hand."""


class ChecksumError(FetchError):
    """A file's sha256 differs from the recorded or expected one."""


def _log(msg: str):
    print(msg, flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

# -----------------------------------------------------------------------------
# atomic writes


def _replace_dir(tmp: Path, out: Path):
    """Move the finished directory `tmp` to `out`, replacing whatever `out` was."""
    old = None
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise FetchError(f"{out} exists and is not a directory")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> str:
    """dst becomes a hard link to src (a copy where links are impossible); atomic."""
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        how = "hard link"
    except OSError:
        shutil.copyfile(src, tmp)
        how = "copy"
    os.replace(tmp, dst)
    return how

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


class _Incomplete(Exception):
    """A transfer that ended early; retried with resume."""


def _retryable(e: BaseException) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code >= 500 or e.code in (408, 429)
    return isinstance(e, (urllib.error.URLError, OSError, http.client.HTTPException, _Incomplete))


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"{type(e.reason).__name__}: {e.reason}" if isinstance(e.reason, BaseException) else str(e.reason)
    return f"{type(e).__name__}: {e}"


def _transfer(url: str, part: Path, timeout: float, progress: bool, chunk: int):
    """One attempt: append the rest of `url` to `part` (Range from its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "variant-fetch/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:   # nothing left past `offset`: complete, or a bad .part
            total = (e.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return
            part.unlink()
            raise _Incomplete(f"server refused to resume at byte {offset}; restarting") from None
        raise
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            start = (resp.headers.get("Content-Range") or "").removeprefix("bytes ").partition("-")[0]
            if not start.isdigit() or int(start) != offset:
                part.unlink()
                raise _Incomplete(f"server resumed at the wrong byte ({resp.headers.get('Content-Range')})")
            mode = "ab"
        else:                            # 200: the server ignored Range; start over
            offset, mode = 0, "wb"
        total = None if length is None else offset + length
        if offset:
            _log(f"  resuming {part.name} at {offset / 2**20:.1f} MiB")
        from tqdm import tqdm
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[:-5], leave=False,
                                         disable=not progress, mininterval=1.0) as bar:
            while block := resp.read(chunk):
                f.write(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Incomplete(f"transfer ended at {size} of {total} bytes")


def download(url: str, dest, *, retries: int = 4, backoff: float = 2.0, timeout: float = 60.0,
             progress: bool = True, chunk: int = 1 << 20) -> Path:
    """Download `url` to `dest`: resumable via dest.part, `retries` retries with backoff
    (backoff * 2**i seconds), renamed into place when complete. Raises DownloadError with
    the place to put the file by hand."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    error = None
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            _log(f"  retry {attempt}/{retries} of {dest.name} in {wait:g} s ({_reason(error)})")
            time.sleep(wait)
        try:
            _transfer(url, part, timeout, progress, chunk)
            os.replace(part, dest)
            return dest
        except Exception as e:  # noqa: BLE001 - classified just below
            if not _retryable(e):
                error = e
                break
            error = e
    tries = attempt + 1
    raise DownloadError(
        f"cannot download {url} ({_reason(error)}; {tries} {'try' if tries == 1 else 'tries'}): "
        f"fetch it by hand and put it at {dest.resolve()}, then rerun `variant fetch`, "
        f"which verifies and records it")


def fetch_file(url: str, out_dir, name: str, manifest: dict, expected: str | None = None,
               **download_kw) -> dict:
    """Make sure out_dir/name is there and intact; returns (and sets) its manifest entry."""
    out_dir = Path(out_dir)
    path = out_dir / name
    entry = manifest["files"].get(name) or {}
    recorded = entry.get("sha256")
    if expected and recorded and expected != recorded:
        raise ChecksumError(f"{out_dir / MANIFEST}: {name} is recorded with sha256 {recorded} "
                            f"but params fetch.sha256 expects {expected}")
    want = expected or recorded
    where = "params fetch.sha256" if expected else f"{out_dir / MANIFEST}"
    downloaded = not path.is_file()
    if downloaded:
        _log(f"  {name}: downloading {url}")
        download(url, path, **download_kw)
        source = "download"
    else:
        _log(f"  {name}: present, verifying")
        path.with_name(name + ".part").unlink(missing_ok=True)   # left by a failed try
        source = entry.get("source", "present before the first fetch (put there by hand?)")
    sha = sha256_file(path)
    if want and sha != want:
        if downloaded:
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            raise ChecksumError(f"{url}: the download has sha256 {sha}, but {where} says {want}; "
                                f"kept it as {bad}")
        raise ChecksumError(f"{path}: sha256 {sha} does not match {want} recorded in {where}; "
                            f"the file is corrupt or was replaced: delete it and rerun `variant fetch`")
    new = {"sha256": sha, "size": path.stat().st_size, "url": url, "source": source,
           "recorded_at": entry.get("recorded_at") if recorded == sha else _now()}
    manifest["files"][name] = new
    return new


def check_pair(var_path, vae_path, cfg: dict):
    """Load var.pth/vae.pth strictly and check they fit each other and params `model`."""
    var = build_var(read_state_dict(var_path), str(var_path))
    vae = build_vae(read_state_dict(vae_path), var.patch_nums, str(vae_path))
    check_profile(var, vae, cfg, var_path, vae_path)
    info = {"var_params": sum(p.numel() for p in var.parameters()),
            "vae_params": sum(p.numel() for p in vae.parameters())}
    del var, vae
    return info


def fetch_released(cfg: dict, out_dir, *, check_load: bool = True, **download_kw) -> dict:
    """The paper profile: download, verify, record, link vae.pth/var.pth, check they load."""
    fetch, out_dir = cfg["fetch"], Path(out_dir)
    for key in ("base_url", "files"):
        if not fetch.get(key):
            raise FetchError(f"params: fetch.{key} is not set for profile {cfg.get('profile')!r}")
    var_file = f"var_d{cfg['model']['var']['depth']}.pth"
    for name in (VAE_FILE, var_file):
        if name not in fetch["files"]:
            raise FetchError(f"params: fetch.files lacks {name} (needed for vae.pth/var.pth)")
    expected = fetch.get("sha256") or {}
    jobs = [(f"{fetch['base_url'].rstrip('/')}/{n}", n) for n in fetch["files"]]
    if fetch.get("reference_url"):
        jobs.append((fetch["reference_url"], fetch.get("reference_batch") or fetch["reference_url"].rsplit("/", 1)[-1]))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    manifest["profile"] = cfg.get("profile")
    _log(f"fetch: {len(jobs)} files into {out_dir}")
    failed = []
    for url, name in jobs:   # on to the next file after a failed download: report them all
        try:
            fetch_file(url, out_dir, name, manifest, expected.get(name), **download_kw)
        except DownloadError as e:
            _log(f"  {name}: FAILED: {e}")
            failed.append(str(e))
        finally:
            write_manifest(out_dir, manifest)   # whatever was verified so far stays recorded
    if failed:
        raise DownloadError(failed[0] if len(failed) == 1 else
                            f"{len(failed)} files could not be downloaded: " + " | ".join(failed))
    for link, src in (("vae.pth", VAE_FILE), ("var.pth", var_file)):
        how = _link_or_copy(out_dir / src, out_dir / link)
        manifest["files"][link] = dict(manifest["files"][src], source=f"{how} of {src}")
        _log(f"  {link} -> {src} ({how})")
    write_manifest(out_dir, manifest)
    if check_load:
        _log("  loading var.pth and vae.pth")
        manifest["loaded"] = check_pair(out_dir / "var.pth", out_dir / "vae.pth", cfg)
        write_manifest(out_dir, manifest)
    _log(f"fetch: done, sha256 in {out_dir / MANIFEST}")
    return manifest

# -----------------------------------------------------------------------------
# tiny pre-training


def _device(cfg) -> torch.device:
    dev = torch.device(cfg.get("device", "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FetchError(f"params: device is {cfg['device']!r} but no CUDA device is available")
    if dev.type == "cuda":   # TF32 convolutions and matmuls: ample for pre-training, ~3x faster
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return dev


def _autocast(dev: torch.device):
    """bf16 autocast on a GPU (the VAR trains as in the train stage); exact fp32 on a CPU."""
    return torch.autocast("cuda", torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()


def _lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of lr."""
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _flip_some(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)


@torch.no_grad()
def init_codebook(vae: VQVAE, x: torch.Tensor, gen: torch.Generator, iters: int = 10):
    """k-means of the quantiser inputs the first training steps will see: the encoder's
    features at every scale (area-downsampled) and their first residuals, V centres."""
    q = vae.quantize
    f = vae.quant_conv(vae.encoder(x))
    H, C = f.shape[-1], f.shape[1]
    pool = []
    for pn in q.patch_nums:
        z = f if pn == H else F.interpolate(f, size=(pn, pn), mode="area")
        pool.append(z.permute(0, 2, 3, 1).reshape(-1, C))
        if pn != H:   # what remains at full size after this scale's (unquantised) estimate
            pool.append((f - F.interpolate(z, size=(H, H), mode="bicubic")).permute(0, 2, 3, 1).reshape(-1, C))
    pool = torch.cat(pool)
    V = q.vocab_size
    centres = pool[torch.randperm(len(pool), generator=gen)[:V]].clone()
    if len(centres) < V:   # fewer vectors than codes: jitter repeats
        extra = centres[torch.randint(len(centres), (V - len(centres),), generator=gen)]
        centres = torch.cat([centres, extra + 0.01 * torch.randn(extra.shape, generator=gen)])
    for _ in range(iters):
        assign = torch.cdist(pool, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, pool)
        counts = assign.bincount(minlength=V).float()
        hit = counts > 0
        centres[hit] = sums[hit] / counts[hit, None]
        if (~hit).any():   # empty clusters restart at random vectors
            centres[~hit] = pool[torch.randint(len(pool), (int((~hit).sum()),), generator=gen)]
    q.embedding.weight.copy_(centres)


@torch.no_grad()
def codebook_usage(vae: VQVAE, x: torch.Tensor, batch_size: int = 200) -> dict:
    """Share of the codebook used on `x` (all scales, and at the last scale), perplexity."""
    vae.eval()
    V = vae.vocab_size
    counts, last = torch.zeros(V, device=x.device), torch.zeros(V, device=x.device)
    for xb in x.split(batch_size):
        toks = vae.img_to_tokens(xb)
        for t in toks:
            counts += t.flatten().bincount(minlength=V).float()
        last += toks[-1].flatten().bincount(minlength=V).float()
    p = counts / counts.sum()
    return {"used": int((counts > 0).sum()), "vocab_size": V,
            "used_fraction": round(float((counts > 0).float().mean()), 4),
            "used_last_scale": int((last > 0).sum()),
            "perplexity": round(float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum())), 1)}


def _summary(losses: list[float], n: int = 10) -> tuple[float, float]:
    n = max(1, min(n, len(losses) // 2 or 1))
    return float(np.mean(losses[:n])), float(np.mean(losses[-n:]))


def train_vqvae(cfg: dict, x: torch.Tensor, seed: int = 0, log=_log) -> tuple[VQVAE, dict]:
    """VQVAE of params model.vae on images x (float, [-1, 1]) with fetch.vae's knobs:
    L1 + L2 reconstruction + VQ loss (commitment beta 0.25), Adam, hflip."""
    hp, dev = cfg["fetch"]["vae"], _device(cfg)
    steps, bs, lr = int(hp["steps"]), int(hp["batch_size"]), float(hp["lr"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VQVAE(patch_nums=tuple(cfg["model"]["patch_nums"]), **cfg["model"]["vae"])
    if vae.image_size != x.shape[-1]:
        raise FetchError(f"params model: the VQVAE codes {vae.image_size}px images "
                         f"(last scale {vae.patch_nums[-1]} x {vae.downsample}) but the data are "
                         f"{x.shape[-1]}px (data.image_size)")
    vae.to(dev)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    init_codebook(vae, x[torch.randperm(len(x), generator=gen)[:256]].to(dev), gen)
    opt = torch.optim.Adam(vae.parameters(), lr=lr, betas=(0.9, 0.95))
    rec_losses, vq_losses = [], []
    vae.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr)
        xb = _flip_some(x[torch.randint(len(x), (bs,), generator=gen)], gen).to(dev)
        rec, vq = vae(xb)
        rec_loss = F.l1_loss(rec, xb) + F.mse_loss(rec, xb)
        loss = rec_loss + vq
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        rec_losses.append(rec_loss.item())
        vq_losses.append(vq.item())
        if (step + 1) % max(1, steps // 6) == 0 or step + 1 == steps:
            log(f"  vqvae step {step + 1}/{steps}: rec {np.mean(rec_losses[-20:]):.4f} "
                f"vq {np.mean(vq_losses[-20:]):.4f} ({time.time() - t0:.0f} s)")
    vae.eval()
    first, final = _summary(rec_losses)
    vq_first, vq_final = _summary(vq_losses)
    info = {"steps": steps, "batch_size": bs, "lr": lr, "seed": seed,
            "rec_loss_first": round(first, 5), "rec_loss_final": round(final, 5),
            "vq_loss_first": round(vq_first, 5), "vq_loss_final": round(vq_final, 5),
            "seconds": round(time.time() - t0, 1)}
    info["codebook"] = codebook_usage(vae, x.to(dev))
    return vae.cpu(), info


@torch.no_grad()
def var_targets(vae: VQVAE, x: torch.Tensor, batch_size: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(ground-truth tokens (N, L), teacher-forcing input (N, L - 1, Cvae)) of images x."""
    gts, ins = [], []
    for xb in x.split(batch_size):
        toks = vae.img_to_tokens(xb)
        gts.append(torch.cat(toks, dim=1))
        ins.append(vae.quantize.teacher_forcing_input(toks))
    return torch.cat(gts), torch.cat(ins)


def train_var(cfg: dict, vae: VQVAE, x: torch.Tensor, labels: torch.Tensor, seed: int = 0,
              log=_log) -> tuple[VAR, dict]:
    """Plain (full-depth) VAR of params model.var, teacher-forced cross-entropy on the
    VQVAE's tokens of x and its flip, class dropout 0.1, AdamW."""
    hp, dev = cfg["fetch"]["var"], _device(cfg)
    steps, bs, lr = int(hp["steps"]), int(hp["batch_size"]), float(hp["lr"])
    num_classes = int(cfg["data"]["num_classes"])
    if int(labels.max()) >= num_classes:
        raise FetchError(f"params data.num_classes is {num_classes} but the data have "
                         f"{int(labels.max()) + 1} classes")
    t0 = time.time()
    vae = vae.to(dev).eval()
    gt, var_in = var_targets(vae, torch.cat([x, x.flip(-1)]).to(dev))
    labels = torch.cat([labels, labels]).to(dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        var = VAR(num_classes=num_classes, vocab_size=vae.vocab_size, cvae=vae.Cvae,
                  patch_nums=vae.patch_nums, cond_drop_rate=0.1, **cfg["model"]["var"]).to(dev)
        decay = [p for n, p in var.named_parameters() if p.dim() >= 2 and "emb" not in n and "pos" not in n]
        other = [p for n, p in var.named_parameters() if not (p.dim() >= 2 and "emb" not in n and "pos" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                 {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(seed)
        losses = []
        var.train()
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr)
            idx = torch.randint(len(gt), (bs,), generator=gen).to(dev)
            with _autocast(dev):
                logits = var(labels[idx], var_in[idx])
            loss = F.cross_entropy(logits.float().reshape(-1, var.vocab_size), gt[idx].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(var.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if (step + 1) % max(1, steps // 6) == 0 or step + 1 == steps:
                log(f"  var step {step + 1}/{steps}: loss {np.mean(losses[-20:]):.4f} "
                    f"({time.time() - t0:.0f} s)")
    var.eval()
    first, final = _summary(losses)
    return var.cpu(), {"steps": steps, "batch_size": bs, "lr": lr, "seed": seed,
                       "loss_first": round(first, 5), "loss_final": round(final, 5),
                       "uniform_loss": round(math.log(vae.vocab_size), 5),
                       "seconds": round(time.time() - t0, 1)}


def pretrain_tiny(cfg: dict, data_dir, out_dir, log=_log) -> dict:
    """Pre-train the tiny VQVAE and VAR on `data_dir`; write vae.pth, var.pth, fetch.json."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    images, labels = vdata.load_images(data_dir, cfg["data"]["image_size"])
    x = vdata.to_float(images)
    seed = int(cfg["fetch"].get("seed", cfg["data"]["seed"]))
    log(f"fetch ({cfg.get('profile')}): pre-training on {len(x)} images of {data_dir}")
    vae, vae_info = train_vqvae(cfg, x, seed, log)
    cb = vae_info["codebook"]
    log(f"  vqvae: rec loss {vae_info['rec_loss_first']:.4f} -> {vae_info['rec_loss_final']:.4f}, "
        f"codebook {cb['used']}/{cb['vocab_size']} used, {vae_info['seconds']} s")
    var, var_info = train_var(cfg, vae, x, labels, seed, log)
    log(f"  var: loss {var_info['loss_first']:.4f} -> {var_info['loss_final']:.4f}, {var_info['seconds']} s")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"profile": cfg.get("profile"), "files": {}, "training": {"vae": vae_info, "var": var_info}}
    for name, model in (("vae.pth", vae), ("var.pth", var)):
        sha = save_state_dict(model, out_dir / name)
        manifest["files"][name] = {"sha256": sha, "size": (out_dir / name).stat().st_size,
                                   "source": "pre-trained", "recorded_at": _now()}
    data_manifest = data_dir / "manifest.json"
    if data_manifest.is_file():
        manifest["data_sha256"] = json.loads(data_manifest.read_text()).get("sha256")
    manifest["loaded"] = check_pair(out_dir / "var.pth", out_dir / "vae.pth", cfg)
    write_manifest(out_dir, manifest)
    log(f"fetch ({cfg.get('profile')}): wrote {out_dir / 'vae.pth'}, {out_dir / 'var.pth'}, {out_dir / MANIFEST}")
    return manifest

# -----------------------------------------------------------------------------
# make-data, train-extractor


def _require_synthetic(cfg: dict, command: str):
    if cfg["data"]["source"] != "synthetic":
        raise FetchError(f"{command}: profile {cfg.get('profile')!r} has data.source "
                         f"{cfg['data']['source']!r}: its images are given by data.root, nothing to make")


def make_data(cfg: dict, split: str, out, log=_log) -> dict:
    _require_synthetic(cfg, "make-data")
    d = cfg["data"]
    if split not in ("train", "eval"):
        raise FetchError(f"make-data: --split must be train or eval, got {split!r}")
    key = f"{split}_per_class"
    if not d.get(key):
        raise FetchError(f"params: data.{key} is not set for profile {cfg.get('profile')!r}")
    seed = int(d["seed"]) + (EVAL_SEED_OFFSET if split == "eval" else 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)
        manifest = vdata.make_synthetic_dataset(tmp, num_classes=d["num_classes"], per_class=d[key],
                                                image_size=d["image_size"], seed=seed)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"make-data: {manifest['count']} {d['image_size']}px images ({split}, seed {seed}) in {out}, "
        f"sha256 {manifest['sha256'][:16]}")
    return manifest


def train_extractor(cfg: dict, data_dir, out, log=_log) -> dict:
    """TinyFeatureNet on data_dir. It trains on 32px images; larger ones (tiny: 40px) are
    resized as its torch-fidelity wrapper resizes them when scoring (bilinear, antialiased)."""
    from variant.metrics import TinyFeatureNet, train_feature_extractor
    if cfg["evaluate"]["extractor"] != "variant-tiny":
        raise FetchError(f"train-extractor: profile {cfg.get('profile')!r} scores with "
                         f"{cfg['evaluate']['extractor']!r} (evaluate.extractor), nothing to train")
    data_dir, out = Path(data_dir), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = TinyFeatureNet.input_size
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        tmp = Path(tmp)
        train_dir = data_dir
        images, labels = vdata.load_images(data_dir)
        if images.shape[-1] != size or images.shape[-2] != size:
            log(f"train-extractor: resizing {images.shape[-2]}x{images.shape[-1]} images to {size}px")
            train_dir = tmp / "data"
            with torch.no_grad():
                x = F.interpolate(vdata.to_float(images), size=(size, size), mode="bilinear",
                                  align_corners=False, antialias=True)
            px = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            from PIL import Image
            for i, (p, y) in enumerate(zip(px, labels.tolist())):
                (train_dir / f"{y:03d}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(p).save(train_dir / f"{y:03d}" / f"{i:05d}.png", compress_level=0)
            if (data_dir / "manifest.json").is_file():
                shutil.copy(data_dir / "manifest.json", train_dir / "manifest.json")
        epochs = int(cfg["fetch"]["feature_extractor"]["epochs"])
        log(f"train-extractor: {len(images)} images, {epochs} epochs")
        tmp_out = tmp / out.name
        info = train_feature_extractor(train_dir, tmp_out, epochs=epochs, seed=int(cfg["data"]["seed"]),
                                       device=_device(cfg))
        info["data_dir"] = str(data_dir)
        os.replace(tmp_out, out)     # the weights first: the record only describes weights in place
        write_text(out.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    log(f"train-extractor: val accuracy {info['val_accuracy']:.3f} in {info['train_seconds']} s -> {out}")
    return info

# -----------------------------------------------------------------------------
# CLI


def _common(p):
    p.add_argument("--profile", default=None, help="params.yaml profile (default: its `profile` key)")
    p.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")


def add_parser(sub):
    p = sub.add_parser("make-data", help="generate the tiny profile's synthetic train/eval images")
    _common(p)
    p.add_argument("--split", choices=("train", "eval"), required=True)
    p.add_argument("--out", default=None, help="output directory (default artifacts/P/data/SPLIT)")
    p.set_defaults(func=_main_make_data)

    p = sub.add_parser("fetch", help="download the released VAR/VQVAE (paper) or pre-train tiny ones")
    _common(p)
    p.add_argument("--out-dir", default=None, help="default artifacts/P/pretrained")
    p.add_argument("--data", default=None, help="tiny: the generated train set (default artifacts/P/data/train)")
    p.add_argument("--retries", type=int, default=4, help="paper: retries per file (default 4)")
    p.add_argument("--timeout", type=float, default=60.0, help="paper: socket timeout in s (default 60)")
    p.add_argument("--no-progress", action="store_true", help="paper: no progress bar")
    p.set_defaults(func=_main_fetch)

    p = sub.add_parser("train-extractor", help="train the tiny profile's FID feature network")
    _common(p)
    p.add_argument("--data", default=None, help="default artifacts/P/data/train")
    p.add_argument("--out", default=None, help="default artifacts/P/feature_extractor.pth")
    p.set_defaults(func=_main_train_extractor)


def _cfg(args, root_needed: bool = True) -> dict:
    """The profile. No command here reads ImageNet (make-data and train-extractor refuse a
    profile whose images come from data.root), so for them an unset data.root is no error."""
    try:
        return load_params(args.params, args.profile)
    except ParamsError as e:
        if root_needed or ".data.root is not set" not in str(e):
            raise
        return load_params(args.params, args.profile, {"data.root": "(not needed here)"})


def _main_make_data(args) -> int:
    cfg = _cfg(args, root_needed=False)
    make_data(cfg, args.split, args.out or f"artifacts/{cfg['profile']}/data/{args.split}")
    return 0


def _main_fetch(args) -> int:
    cfg = _cfg(args, root_needed=False)
    out_dir = args.out_dir or f"artifacts/{cfg['profile']}/pretrained"
    if cfg["data"]["source"] == "synthetic":
        pretrain_tiny(cfg, args.data or f"artifacts/{cfg['profile']}/data/train", out_dir)
    else:
        if args.data:
            _log("fetch: --data is only used when pre-training (tiny); ignored")
        fetch_released(cfg, out_dir, retries=args.retries, timeout=args.timeout,
                       progress=not args.no_progress)
    return 0


def _main_train_extractor(args) -> int:
    cfg = _cfg(args, root_needed=False)
    train_extractor(cfg, args.data or f"artifacts/{cfg['profile']}/data/train",
                    args.out or f"artifacts/{cfg['profile']}/feature_extractor.pth")
    return 0
