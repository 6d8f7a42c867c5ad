"""Reading, checking and writing checkpoints in the reference VAR key layout.

A checkpoint is a plain state dict (name -> tensor), the layout of the released
`var_d*.pth` and `vae_ch160v4096z32.pth`. Our fine-tuned supernets are written the same
way, so the reference code can load them too. Model sizes are read off the tensors
themselves, so a released file needs no config; every error names the file and the key.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from variant.util.atomic import torch_save
from variant.util.hashing import sha256_cached
from variant.models import VAR, VQVAE


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message saying why."""


def load_error(e: Exception) -> str:
    """Why torch.load refused a file, in one line (torch's own messages run to paragraphs)."""
    if isinstance(e, EOFError):
        return "the file is empty"
    if isinstance(e, pickle.UnpicklingError):   # weights_only met a class and refused it unrun
        return "it holds objects other than tensors and plain values, which could run code when loaded"
    first = (str(e).splitlines() or [""])[0].split(". ")[0]
    return f"{type(e).__name__}: {first}"


def read_state_dict(path: str | os.PathLike, finite: bool = True) -> dict[str, torch.Tensor]:
    """finite=False: the caller checks the values itself (check_finite), e.g. on a GPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; name the file instead
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({load_error(e)})") from e
    sd = as_state_dict(obj, str(path))
    if finite:
        check_finite(sd, str(path))
    return sd


# buffers whose -inf entries are their meaning (the block-causal attention mask); NaN is
# still refused there
MASKS = {"attn_bias_for_masking"}


def check_finite(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuse NaN or infinite weights, naming the first such tensor: a diverged or damaged
    checkpoint would otherwise train or sample garbage without an error. One reduction
    per tensor."""
    for k, v in sd.items():
        if not v.is_floating_point():
            continue
        if v.isnan().any() if k in MASKS else not v.isfinite().all():
            raise CheckpointError(f"{source}: tensor {k!r} holds NaN or infinite values (a diverged "
                                  "or damaged checkpoint; retrain or fetch it again)")


def as_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The name -> tensor mapping in obj, unwrapping one {"model"|"state_dict": ...} level."""
    def is_sd(o):
        return isinstance(o, dict) and len(o) > 0 and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in o.items())
    if is_sd(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if is_sd(obj.get(key)):
                return obj[key]
        shown = ", ".join(map(repr, list(obj)[:8]))
        raise CheckpointError(f"{source}: not a state dict (a dict of tensors); its top-level keys are {shown}")
    raise CheckpointError(f"{source}: not a state dict but a {type(obj).__name__}")


def _require(sd, key, source):
    if key not in sd:
        raise CheckpointError(f"{source}: key {key!r} is missing, so this is not a VAR/VQVAE "
                              "checkpoint in the reference layout")
    return sd[key]


def var_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """VAR constructor arguments read off a state dict."""
    width = _require(sd, "pos_start", source).shape[-1]
    depth = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    levels = _require(sd, "lvl_1L", source).flatten().tolist()
    patch_nums = [round(levels.count(k) ** 0.5) for k in range(int(max(levels)) + 1)]
    scale_mul = sd.get("blocks.0.attn.scale_mul_1H11")
    return dict(
        depth=depth, width=width,
        num_heads=scale_mul.shape[1] if scale_mul is not None else width // 64,
        attn_l2_norm=scale_mul is not None,
        num_classes=_require(sd, "class_emb.weight", source).shape[0] - 1,
        vocab_size=_require(sd, "head.weight", source).shape[0],
        cvae=_require(sd, "word_embed.weight", source).shape[1],
        patch_nums=tuple(patch_nums),
        mlp_ratio=_require(sd, "blocks.0.ffn.fc1.weight", source).shape[0] / width,
        shared_aln="blocks.0.ada_gss" in sd,
    )


def vae_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """VQVAE constructor arguments (all but patch_nums) read off a state dict."""
    emb = _require(sd, "quantize.embedding.weight", source)
    ch = _require(sd, "encoder.conv_in.weight", source).shape[0]
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    share = {int(m.group(1)) for k in sd if (m := re.match(r"quantize\.quant_resi\.qresi_ls\.(\d+)\.", k))}
    return dict(
        vocab_size=emb.shape[0], z_channels=emb.shape[1], ch=ch, ch_mult=ch_mult,
        num_res_blocks=len(blocks), share_quant_resi=len(share),
        using_sa=any(k.startswith(f"encoder.down.{levels[-1]}.attn.") for k in sd),
        using_mid_sa="encoder.mid.attn_1.norm.weight" in sd,
    )


def _describe(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> str:
    """The sizes the checkpoint implies beside the model's, for shape-mismatch errors."""
    try:
        if isinstance(model, VAR):
            c = var_config(sd, source)
            return (f"the checkpoint is a depth-{c['depth']} VAR of width {c['width']}, "
                    f"the model depth {model.depth} of width {model.width}")
        c = vae_config(sd, source)
        return (f"the checkpoint is a VQVAE with ch={c['ch']}, z_channels={c['z_channels']}, "
                f"vocabulary {c['vocab_size']}; the model ch={model.encoder.conv_in.out_channels}, "
                f"z_channels={model.Cvae}, vocabulary {model.vocab_size}")
    except CheckpointError:
        return "the checkpoint's sizes could not be read"


def load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint"):
    """load_state_dict(strict=True) with errors that name every offending key."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    for k, v in own.items():
        if sd[k].shape != v.shape:
            raise CheckpointError(
                f"{source}: key {k!r} has shape {tuple(sd[k].shape)} but the model expects "
                f"{tuple(v.shape)}: {_describe(model, sd, source)}")
    model.load_state_dict({k: sd[k].to(v.dtype) for k, v in own.items()}, strict=True)
    return model


def uninitialised(make):
    """make() built on the meta device, then given uninitialised CPU memory: its weights
    come from a checkpoint next, and drawing random ones for 2 B parameters takes seconds.
    Non-persistent buffers are refilled by the modules' own _apply (see AdaLNBlock)."""
    with torch.device("meta"):
        module = make()
    return module.to_empty(device="cpu")


def build_var(sd: dict[str, torch.Tensor], source: str = "checkpoint", **overrides) -> VAR:
    """A VAR shaped like the state dict, with its weights (float32)."""
    cfg = var_config(sd, source) | overrides
    return load_strict(uninitialised(lambda: VAR(**cfg)), sd, source)


def build_vae(sd: dict[str, torch.Tensor], patch_nums, source: str = "checkpoint", **overrides) -> VQVAE:
    cfg = vae_config(sd, source) | overrides
    vae = uninitialised(lambda: VQVAE(patch_nums=tuple(patch_nums), **cfg))
    hits = sd.get("quantize.ema_vocab_hit_SV")
    if hits is not None and hits.shape[0] != len(patch_nums):
        # training statistics sized by the scales the VQVAE was trained with; unused here
        sd = dict(sd, **{"quantize.ema_vocab_hit_SV": torch.zeros_like(vae.quantize.ema_vocab_hit_SV)})
    return load_strict(vae, sd, source)


def load_models(var_path, vae_path, device="cpu") -> tuple[VAR, VQVAE]:
    """The pair used for sampling, in eval mode: the VQVAE's scales come from the VAR.
    The values are checked where they land (a GPU's one reduction a tensor is cheap; a
    CPU's takes seconds for VAR-d30)."""
    var = build_var(read_state_dict(var_path, finite=False), str(var_path)).to(device).eval()
    check_finite(var.state_dict(), str(var_path))
    vae = build_vae(read_state_dict(vae_path, finite=False), var.patch_nums, str(vae_path))
    vae = vae.to(device).eval().requires_grad_(False)
    check_finite(vae.state_dict(), str(vae_path))
    return var, vae


def check_profile(var: VAR, vae: VQVAE | None, cfg: dict, var_path, vae_path=None) -> None:
    """Refuse a VAR (and VQVAE) of another model than params `model`/`data` describe,
    naming the file and the key: a checkpoint of another profile fails here, not later
    as a shape error or a wrong number."""
    m = cfg["model"]
    want = [("model.patch_nums", var.patch_nums, tuple(m["patch_nums"]), "scales"),
            ("model.var.depth", var.depth, m["var"]["depth"], "depth")]
    want += [(f"model.var.{k}", getattr(var, k), m["var"][k], k) for k in ("width", "num_heads") if k in m["var"]]
    if "data" in cfg:
        want.append(("data.num_classes", var.num_classes, cfg["data"]["num_classes"], "classes"))
    for key, got, expected, what in want:
        if got != expected:
            raise CheckpointError(f"{var_path}: {what} is {got} but params {key} is {expected} (profile "
                                  f"{cfg.get('profile', '?')}): a checkpoint of another model")
    if vae is not None and (vae.vocab_size, vae.Cvae) != (var.vocab_size, var.cvae):
        raise CheckpointError(f"{vae_path}: vocabulary {vae.vocab_size} x {vae.Cvae} does not fit "
                              f"{var_path} ({var.vocab_size} x {var.cvae})")


def save_state_dict(model_or_sd, path: str | os.PathLike) -> str:
    """Write atomically (a crash never leaves half a file) and return the file's sha256."""
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, torch.nn.Module) else model_or_sd
    torch_save({k: v.detach().cpu() for k, v in sd.items()}, path)
    return sha256_cached(path)   # remembered: every job that reads the file names its sha256
