"""What tokenising once saves: `variant bench tokenize` times a VAR training step fed from
stored tokens against the same step that encodes its images with the VQVAE first.

Random models of the profile's shapes; the two steps alternate, so load from other
processes hits both alike; medians. Measurements: benchmarks/README.md.

    variant bench tokenize --profile tiny --steps 10
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from variant.bench import subcommand
from variant.options import params_options


def add_parser(sub):
    p = subcommand(sub, "tokenize", "time a training step from tokens vs. from images (encode per step)")
    params_options(p, device=True)
    p.add_argument("--steps", type=int, default=10, help="timed steps of each kind (default 10)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default: params train.batch_size)")
    p.set_defaults(func=_main)


def bench_tokenize(cfg: dict, device: torch.device, batch: int, steps: int) -> dict:
    """Median seconds of a step from images and of one from tokens."""
    from variant.models import VAR, VQVAE
    from variant.stages.tokenize import split_scales
    m, S = cfg["model"], cfg["data"]["image_size"]
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg["train"]["precision"])
    torch.manual_seed(0)
    vae = VQVAE(patch_nums=m["patch_nums"], **m["vae"]).to(device).eval().requires_grad_(False)
    var = VAR(num_classes=cfg["data"]["num_classes"], vocab_size=m["vae"]["vocab_size"],
              cvae=m["vae"]["z_channels"], patch_nums=m["patch_nums"], **m["var"]).to(device).train()
    opt = torch.optim.AdamW(var.parameters(), lr=1e-5)
    imgs = torch.rand(batch, 3, S, S, device=device) * 2 - 1
    labels = torch.randint(0, cfg["data"]["num_classes"], (batch,), device=device)
    with torch.no_grad():
        tokens = torch.cat(vae.img_to_tokens(imgs), 1)

    def step(from_images: bool):
        with torch.no_grad():
            t = torch.cat(vae.img_to_tokens(imgs), 1) if from_images else tokens
            x = vae.quantize.teacher_forcing_input(split_scales(t, vae.patch_nums))
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = var(labels, x)
        F.cross_entropy(logits.float().flatten(0, 1), t.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(True), step(False)   # warm-up
    times = {True: [], False: []}
    for _ in range(steps):
        for from_images in (True, False):
            t0 = time.perf_counter()
            step(from_images)
            times[from_images].append(time.perf_counter() - t0)
    return {"from_images": float(np.median(times[True])), "from_tokens": float(np.median(times[False]))}


def _main(args) -> int:
    from variant.config import load_params
    from variant.util.devices import resolve_device
    cfg = load_params(args.params, args.profile)
    device = resolve_device(args.device, cfg)
    batch = args.batch or cfg["train"]["batch_size"]
    t = bench_tokenize(cfg, device, batch, args.steps)
    t_img, t_tok = t["from_images"], t["from_tokens"]
    print(f"median step from images {t_img:.3f} s, from tokens {t_tok:.3f} s: {t_img / t_tok:.2f}x faster "
          f"(encode {t_img - t_tok:.3f} s/step; batch {batch}, {cfg['train']['precision']}, {device}, "
          f"{torch.get_num_threads()} thread(s), {args.steps} steps each)")
    return 0
