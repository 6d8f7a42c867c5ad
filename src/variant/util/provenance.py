"""What every result row records: params hash, checkpoint sha256, git commit, seed, device."""
from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import torch



@lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the checkout the code runs from, with `-dirty` if it has local changes;
    VARIANT_GIT_COMMIT where the code runs from a copy without .git (a GPU node given files)."""
    if os.environ.get("VARIANT_GIT_COMMIT"):
        return os.environ["VARIANT_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: str | torch.device) -> str:
    """The device as every result row names it (profiling's `gpu`, quality's `device`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


def provenance(cfg: dict, seed: int, device, checkpoint_sha256: str | None = None) -> dict:
    return {"profile": cfg["profile"], "config_hash": cfg["config_hash"],
            "checkpoint_sha256": checkpoint_sha256 or "", "git_commit": git_commit(),
            "seed": int(seed), "device": device_name(device), "torch_version": torch.__version__}
