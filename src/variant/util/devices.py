"""The device a stage runs on: the one asked for, checked before any work."""
from __future__ import annotations


def resolve_device(requested: str | None, cfg: dict | None = None):
    """`requested` (a --device option), else the profile's `device`, else CUDA when this
    machine has it; a CUDA device the machine lacks stops here, naming where it was asked
    for. Only the device is chosen: numerics (TF32 and the like) are each caller's own."""
    import torch
    from variant.config import check_device
    if requested:
        device, where = requested, "--device"
    elif cfg and cfg.get("device"):
        device, where = cfg["device"], f"params profiles.{cfg.get('profile')}.device"
    else:
        device, where = ("cuda" if torch.cuda.is_available() else "cpu"), "the default device"
    check_device(device, where)
    return torch.device(device)
