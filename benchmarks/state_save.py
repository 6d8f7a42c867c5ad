"""Seconds to write GPU tensors with torch.save, with and without the zip's CRC32 (the
resume state is written without: variant.training.state.save_state), through the same
atomic writer (fsync included). A disk-bound host shows little difference; a fast disk
shows the checksum's cost. Measurements: README (rehearsal section).

    python benchmarks/state_save.py DIR [--gib 4]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from variant.util.atomic import torch_save


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="where to write (the file system the states will live on)")
    ap.add_argument("--gib", type=int, default=4, help="GiB of float32 tensors, 256 MiB each")
    a = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(a.dir, exist_ok=True)
    sd = {f"t{i}": torch.randn(64, 1024, 1024, device=device) for i in range(4 * a.gib)}
    path = os.path.join(a.dir, "state-bench.pt")
    for crc in (True, False, True, False):
        t = time.perf_counter()
        torch_save(sd, path, crc32=crc)
        s, size = time.perf_counter() - t, os.path.getsize(path) / 2**30
        print(f"crc32={crc}: {s:.2f} s for {size:.2f} GiB -> {size / s:.2f} GiB/s", flush=True)
        os.remove(path)
    print(torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
