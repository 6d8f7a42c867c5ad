"""The device a stage runs on: the one asked for, checked before any work."""
from __future__ import annotations

import contextlib
import os


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


@contextlib.contextmanager
def deterministic_kernels():
    """Deterministic CUDA kernels inside the block, so that a training repeated on the same
    GPU model writes the same bytes; torch raises on an op that has no deterministic
    kernel instead of running it. The previous settings come back afterwards."""
    import torch
    # cuBLAS splits its reductions by workspace unless the workspace is fixed; read when a
    # handle is made, so this is set before the first matmul of the process
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn = torch.backends.cudnn
    before = torch.are_deterministic_algorithms_enabled(), cudnn.deterministic, cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        cudnn.deterministic, cudnn.benchmark = before[1], before[2]
