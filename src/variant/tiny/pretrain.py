"""The synthetic profiles' stand-ins for the released checkpoints: a small VQVAE, then a
small (full-depth) VAR, pre-trained on the generated train set. Sizes come from params
`model`, steps/batch/lr from `fetch.vae` / `fetch.var`; every draw is seeded, so a rerun
writes the same weights."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from variant.models import VAR, VQVAE
from variant.sampling.precision import tf32
from variant.training.state import rng_states, set_rng_states
from variant.util.atomic import torch_save
from variant.util.devices import deterministic_kernels, resolve_device
from variant.util.images import load_images, to_float
from variant.util.provenance import device_name


@contextlib.contextmanager
def training_device(cfg: dict):
    """The profile's device for the block; on a GPU with TF32 convolutions and matmuls
    (ample for these small models and about 3x faster) and deterministic kernels, so that
    a rebuild on the same GPU model writes the same weights and rows of several device
    sessions can share one base."""
    dev = resolve_device(None, cfg)
    if dev.type != "cuda":
        yield dev
        return
    with tf32(True), deterministic_kernels():
        yield dev


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


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor, model: torch.nn.Module):
    """One optimiser step on `loss`, gradients clipped to norm 1."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def _log_due(step: int, steps: int) -> bool:
    """Six progress lines a run, and the last step."""
    return (step + 1) % max(1, steps // 6) == 0 or step + 1 == steps


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


def train_vqvae(cfg: dict, x: torch.Tensor, dev: torch.device, seed: int = 0, log=print) -> tuple[VQVAE, dict]:
    """VQVAE of params model.vae on images x (float, [-1, 1]) with fetch.vae's knobs:
    L1 + L2 reconstruction + VQ loss (commitment beta 0.25), Adam, hflip."""
    hp = cfg["fetch"]["vae"]
    steps, bs, lr = int(hp["steps"]), int(hp["batch_size"]), float(hp["lr"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = VQVAE(patch_nums=tuple(cfg["model"]["patch_nums"]), **cfg["model"]["vae"])
    if vae.image_size != x.shape[-1]:
        raise ValueError(f"params model: the VQVAE codes {vae.image_size}px images "
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
        _update(opt, loss, vae)
        rec_losses.append(rec_loss.item())
        vq_losses.append(vq.item())
        if _log_due(step, steps):
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


def train_var(cfg: dict, vae: VQVAE, x: torch.Tensor, labels: torch.Tensor, dev: torch.device,
              seed: int = 0, log=print, keep=None) -> tuple[VAR, dict]:
    """Plain (full-depth) VAR of params model.var, teacher-forced cross-entropy on the
    VQVAE's tokens of x and its flip, class dropout 0.1, AdamW. keep: a file that holds
    the training's state (weights, optimiser, random generators, step) every tenth of
    the run, so that a run cut short continues from there (on a CPU to the same weights)."""
    hp = cfg["fetch"]["var"]
    steps, bs, lr = int(hp["steps"]), int(hp["batch_size"]), float(hp["lr"])
    num_classes = int(cfg["data"]["num_classes"])
    if int(labels.max()) >= num_classes:
        raise ValueError(f"params data.num_classes is {num_classes} but the data have "
                         f"{int(labels.max()) + 1} classes")
    t0 = time.time()
    vae = vae.to(dev).eval()
    gt, var_in = var_targets(vae, torch.cat([x, x.flip(-1)]).to(dev))
    labels = torch.cat([labels, labels]).to(dev)
    key, every = var_key(cfg, vae), max(1, steps // 10)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        var = VAR(num_classes=num_classes, vocab_size=vae.vocab_size, cvae=vae.Cvae,
                  patch_nums=vae.patch_nums, cond_drop_rate=0.1, **cfg["model"]["var"]).to(dev)
        decay = [p for n, p in var.named_parameters() if p.dim() >= 2 and "emb" not in n and "pos" not in n]
        other = [p for n, p in var.named_parameters() if not (p.dim() >= 2 and "emb" not in n and "pos" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                 {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(seed)
        losses, start = [], 0
        saved = torch.load(keep, map_location="cpu", weights_only=True) if keep and Path(keep).is_file() else None
        if saved is not None and saved.get("key") == key:
            var.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            set_rng_states(saved["rng"])
            losses, start = list(saved["losses"]), int(saved["step"])
            log(f"  var: resumed at step {start}/{steps} from {keep}, saved by an earlier fetch")
        var.train()
        for step in range(start, steps):
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr)
            idx = torch.randint(len(gt), (bs,), generator=gen).to(dev)
            with _autocast(dev):
                logits = var(labels[idx], var_in[idx])
            loss = F.cross_entropy(logits.float().reshape(-1, var.vocab_size), gt[idx].reshape(-1))
            _update(opt, loss, var)
            losses.append(loss.item())
            if _log_due(step, steps):
                log(f"  var step {step + 1}/{steps}: loss {np.mean(losses[-20:]):.4f} "
                    f"({time.time() - t0:.0f} s)")
            if keep is not None and (step + 1) % every == 0 and step + 1 < steps:
                torch_save({"key": key, "step": step + 1, "model": var.state_dict(), "optimizer": opt.state_dict(),
                            "generator": gen.get_state(), "rng": rng_states(), "losses": losses}, keep)
    var.eval()
    first, final = _summary(losses)
    return var.cpu(), {"steps": steps, "batch_size": bs, "lr": lr, "seed": seed,
                       "loss_first": round(first, 5), "loss_final": round(final, 5),
                       "uniform_loss": round(math.log(vae.vocab_size), 5),
                       "seconds": round(time.time() - t0, 1)}


def var_key(cfg: dict, vae: VQVAE) -> str:
    """What a VAR pre-training state depends on: its VQVAE (recipe and weights: a GPU
    retrains it to other weights), the VAR's architecture and its training."""
    weights = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in vae.state_dict().values()))
    parts = {"vqvae": vqvae_key(cfg), "vqvae_weights": weights.hexdigest(), "var": cfg["model"]["var"],
             "fetch": cfg["fetch"].get("var")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def vqvae_key(cfg: dict) -> str:
    """What the pre-trained VQVAE depends on: the data, its architecture and its training."""
    keys = {"data": ("family", "num_classes", "image_size", "train_per_class", "seed"),
            "model": ("patch_nums", "vae"), "fetch": ("vae", "seed")}
    parts = {f"{section}.{k}": cfg[section].get(k) for section, ks in keys.items() for k in ks}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _vqvae_stage(cfg: dict, x: torch.Tensor, dev, seed: int, log, keep) -> tuple[VQVAE, dict]:
    """The VQVAE, trained, or read from `keep` (a file) where an interrupted fetch left it
    for the same vqvae_key: on one GPU a fetch may take more than one sitting."""
    key = vqvae_key(cfg)
    if keep is not None and Path(keep).is_file():
        saved = torch.load(keep, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            vae = VQVAE(patch_nums=tuple(cfg["model"]["patch_nums"]), **cfg["model"]["vae"])
            vae.load_state_dict(saved["state_dict"])
            log(f"  vqvae: read from {keep}, trained by an earlier fetch that stopped after it")
            return vae.eval(), json.loads(saved["info"])
    vae, info = train_vqvae(cfg, x, dev, seed, log)
    if keep is not None:
        torch_save({"key": key, "info": json.dumps(info), "state_dict": vae.state_dict()}, keep)
    return vae, info


def pretrain(cfg: dict, data_dir, log=print, keep_vqvae=None, keep_var=None,
             vae: tuple[VQVAE, dict] | None = None) -> tuple[VQVAE, VAR, dict]:
    """Pre-train the VQVAE, then the VAR, on the ImageFolder set `data_dir`; both models on
    the CPU and {"vae": ..., "var": ...} of their training records. keep_vqvae: a file
    that holds the trained VQVAE until the VAR is done too (see _vqvae_stage); keep_var:
    one that holds the VAR's training state as it goes (see train_var). vae: a VQVAE
    pre-trained already and its record (params shares_base): only the VAR is trained."""
    images, labels = load_images(data_dir, cfg["data"]["image_size"])
    x = to_float(images)
    seed = int(cfg["fetch"].get("seed", cfg["data"]["seed"]))
    log(f"fetch ({cfg.get('profile')}): pre-training on {len(x)} images of {data_dir}")
    with training_device(cfg) as dev:
        if vae is None:
            vae, vae_info = _vqvae_stage(cfg, x, dev, seed, log, keep_vqvae)
            cb = vae_info["codebook"]
            log(f"  vqvae: rec loss {vae_info['rec_loss_first']:.4f} -> {vae_info['rec_loss_final']:.4f}, "
                f"codebook {cb['used']}/{cb['vocab_size']} used, {vae_info['seconds']} s")
        else:
            vae, vae_info = vae
        var, var_info = train_var(cfg, vae, x, labels, dev, seed, log, keep_var)
        made_on = {"device": device_name(dev), "torch_version": torch.__version__}
    log(f"  var: loss {var_info['loss_first']:.4f} -> {var_info['loss_final']:.4f}, {var_info['seconds']} s")
    return vae, var, {"vae": vae_info, "var": var_info | made_on}
