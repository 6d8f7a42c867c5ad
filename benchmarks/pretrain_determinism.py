"""Is the synthetic profiles' pre-training (`variant fetch`) bitwise repeatable on this GPU?

Runs a profile's VQVAE + VAR pre-training twice, with its steps and data cut short, and
prints the sha256 of each model's weights per run and the seconds each took. Equal hashes
mean a rebuild on the same GPU model writes the same base, so rows made in separate
device sessions can share one base (docs/SMALL_SCALE.md). Run the same command on another
GPU model and compare the printed hashes to learn whether the base carries across models.

    python benchmarks/pretrain_determinism.py [--profile small_hard] [--steps 60] [--per-class 40] [--out F.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch

from variant.config import load_params
from variant.tiny.data import make_split
from variant.tiny.pretrain import pretrain


def weights_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="small_hard")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=60, help="VQVAE and VAR steps each (the profile's batch sizes)")
    ap.add_argument("--per-class", type=int, default=40, help="training images per class")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default=None, help="a JSON file for the record")
    a = ap.parse_args(argv)
    cfg = load_params(a.params, a.profile)
    cfg["data"]["train_per_class"] = a.per_class
    for part in ("vae", "var"):
        cfg["fetch"][part]["steps"] = a.steps
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        make_split(cfg["data"], "train", Path(tmp) / "train")
        for i in range(a.runs):
            t = time.perf_counter()
            vae, var, _ = pretrain(cfg, Path(tmp) / "train", log=lambda *_: None)
            runs.append({"run": i, "seconds": round(time.perf_counter() - t, 1),
                         "vae_sha256": weights_sha256(vae), "var_sha256": weights_sha256(var)})
            print(json.dumps(runs[-1]), flush=True)
    same = all(r["vae_sha256"] == runs[0]["vae_sha256"] and r["var_sha256"] == runs[0]["var_sha256"] for r in runs)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    record = {"profile": a.profile, "steps": a.steps, "per_class": a.per_class, "device": device,
              "torch_version": torch.__version__, "bitwise_equal": same, "runs": runs}
    print(f"{device}, torch {torch.__version__}: {a.runs} pre-trainings of {a.profile} "
          f"({a.steps} steps each) {'wrote the same weights' if same else 'DIFFER'}")
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
