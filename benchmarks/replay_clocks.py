"""Does the lean sampler's CUDA graph run at full clock? (GPU only; needs nvidia-ml-py.)

The d30 graph replay takes ~30 ms longer than the sum of its kernels timed one by one.
This replays the VAR-d30 pass (random weights, batch 64, the bench's sampling settings)
back to back while a thread reads the SM clock and board power every 10 ms, and prints
both beside the replay times, so the gap can be put down to clocks (power) or to the
gaps between kernels.

    python benchmarks/replay_clocks.py [--depth 30] [--batch 64] [--replays 20]
"""
import argparse
import statistics
import threading
import time

import pynvml
import torch

from variant.bench.sample import random_vae, random_var
from variant.stages.profile import random_labels
from variant.sampling import LeanSampler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--replays", type=int, default=20)
    a = p.parse_args()
    dev = torch.device("cuda")
    var, vae = random_var(a.depth, dev), random_vae(dev)
    sampler = LeanSampler(var, vae)
    labels = random_labels(var, a.batch, dev, 0)
    run = lambda: sampler.generate(labels, None, cfg=1.5, top_k=900, top_p=0.96, decode=False)  # noqa: E731
    for _ in range(3):        # capture and warm up
        run()
    torch.cuda.synchronize()

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    limit_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
    max_mhz = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
    samples, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            samples.append((pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                            pynvml.nvmlDeviceGetPowerUsage(h) / 1000))
            time.sleep(0.01)
    t = threading.Thread(target=poll)
    t.start()
    times = []
    for _ in range(a.replays):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        run()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1000)
    stop.set()
    t.join()
    clocks, watts = [c for c, _ in samples], [w for _, w in samples]
    print(f"{torch.cuda.get_device_name(dev)}: d{a.depth} batch {a.batch}, {a.replays} replays back to back")
    print(f"  replay s: median {statistics.median(times):.4f}, min {min(times):.4f}, max {max(times):.4f}")
    print(f"  SM clock MHz (max {max_mhz}): median {statistics.median(clocks):.0f}, min {min(clocks)}, "
          f"max {max(clocks)}  ({len(samples)} readings)")
    print(f"  power W (enforced limit {limit_w:.0f}): median {statistics.median(watts):.0f}, max {max(watts):.0f}")


if __name__ == "__main__":
    main()
