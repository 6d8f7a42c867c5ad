"""The resume state of a training run, and the process RNGs it carries.

Every `checkpoint_every` steps `state.pt` (atomic) holds model, optimizer, scaler, step,
epoch, RNG states, data position and the log so far, so a resumed run continues bitwise
(CPU; on GPU with deterministic kernels). It holds only tensors and plain values, so it
loads with weights_only=True: a crafted pickle is refused unrun. It is keyed by the run's
identity (run, config hash, phases, batch, inputs' sha256): a state of another identity, or
one that cannot be read, is set aside beside it (state.pt.stale-<config hash>,
state.pt.corrupt) and training starts afresh.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from variant.models.checkpoint import load_error
from variant.training.distributed import DistInfo, barrier
from variant.util.atomic import torch_save


def rng_states() -> dict:
    """The process RNGs as tensors and plain values, so that a state loads with
    weights_only=True. Training draws from keyed generators; numpy's and Python's global
    RNGs are kept too, so that anything else drawing from them resumes exactly."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
           "python": {"version": version, "state": list(mt), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = s["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


STATE_KEYS = {"ident", "model", "optimizer", "scaler", "step", "epoch", "rng", "log"}


def load_state(state_path: Path, ident: dict, info: DistInfo, say) -> dict | None:
    """This run's resume state, or None to train afresh. A state of another run (params
    edited, other phases or inputs) or one that cannot be read (truncated, empty, or holding
    pickled objects: weights_only refuses them unrun) cannot be resumed, so it is set aside
    beside the state, never deleted, with one line saying so."""
    if not state_path.is_file():
        return None
    try:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        if not isinstance(st, dict) or not STATE_KEYS <= set(st) or not isinstance(st["ident"], dict):
            raise ValueError("not a training state")
    except Exception as e:   # torch raises many types for a bad file
        aside, why = state_path.with_name(state_path.name + ".corrupt"), f"unreadable ({load_error(e)})"
    else:
        if st["ident"] == ident:
            return st
        keys = list(ident) + [k for k in st["ident"] if k not in ident]
        diff = [k for k in keys if st["ident"].get(k) != ident.get(k)]
        tag = re.sub(r"[^0-9A-Za-z]", "", str(st["ident"].get("config_hash")))[:16] or "unknown"
        aside, why = state_path.with_name(f"{state_path.name}.stale-{tag}"), \
            f"saved for another run ({', '.join(diff)} differ)"
    barrier(info)   # every rank has read the file before rank 0 moves it
    if info.main:
        os.replace(state_path, aside)
    barrier(info)
    say(f"{state_path}: {why}; set aside as {aside.name}, training {ident['run']} afresh")
    return None


def save_state(state_path: Path, ident: dict, model, opt, scaler, step: int, steps_per_epoch: int,
               global_batch: int, log_rows: list) -> None:
    """Write the resume state after `step` optimizer steps (atomically). Without zip
    checksums: a d30 state is 24 GB, their computation alone would outlast the time SLURM
    leaves between SIGTERM and SIGKILL (30 s by default), and only this code reads it."""
    epoch, batch_in_epoch = divmod(step, steps_per_epoch)
    torch_save({"ident": ident, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "epoch": epoch,
                "data": {"epoch": epoch, "batch_in_epoch": batch_in_epoch, "global_batch": global_batch},
                "rng": rng_states(), "log": log_rows}, state_path, crc32=False)


def restore(st: dict, model, opt, scaler) -> None:
    """Load a state from load_state into the run's model, optimizer, scaler and RNGs."""
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    scaler.load_state_dict(st["scaler"])
    set_rng_states(st["rng"])
