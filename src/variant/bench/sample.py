"""`variant bench sample`: the profile stage's sweep with every knob on the command line.

Random weights of any depth (or --var/--vae files), any modes and (d, N) pairs, CoDe
rows (Table 2) and GPU kernel tables of lean passes. The rows are the profile stage's
(variant.stages.profile); results and their reading are in benchmarks/README.md.

    variant bench sample --depth 30 --batch 64 --subnet-depth 30 16 8 4 2 --bridge 6 \
        --modes reference lean --code 6 --out results/profiling/h100.parquet
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from variant import bench
from variant.models import VAR, VQVAE
from variant.models.supernet import Subnet
from variant.sampling import PRECISIONS, LeanSampler
from variant.stages.profile import MODES, Sweep, format_row, random_labels, sweep, write_rows
from variant.util.atomic import write_text


# ---- the weights a benchmark runs ---------------------------------------------------------
def random_var(depth: int, device, seed: int = 0, **kw) -> VAR:
    """VAR-d{depth} with random weights, initialised directly on `device` (fast for 2B)."""
    torch.manual_seed(seed)
    with torch.device(device):
        var = VAR(depth=depth, **kw)
    return var.eval().requires_grad_(False)


def random_vae(device, seed: int = 0, **kw) -> VQVAE:
    torch.manual_seed(seed)
    with torch.device(device):
        vae = VQVAE(**kw)
    return vae.eval().requires_grad_(False)


def bench_models(depth: int, device, seed: int = 0, var_path=None, vae_path=None) -> tuple[VAR, VQVAE]:
    """The checkpoints at var_path/vae_path, or random weights of `depth` seeded by `seed`."""
    if (var_path is None) != (vae_path is None):
        raise ValueError("--var and --vae go together")
    if var_path is None:
        return random_var(depth, device, seed), random_vae(device, seed)
    from variant.models.checkpoint import load_models
    var, vae = load_models(var_path, vae_path, device)
    return var.requires_grad_(False), vae


def bench_device(requested: str | None) -> torch.device:
    """--device, else CUDA where there is one: a benchmark has no params profile."""
    from variant.util.devices import resolve_device
    return resolve_device(requested)


# ---- GPU kernel tables ------------------------------------------------------------------------
def trace_lean(sampler: LeanSampler, var: VAR, subnet: Subnet, batch: int, path: Path, **kw):
    """GPU kernel times of one eager lean pass (the kernels the graph replays), for notes."""
    from torch.profiler import ProfilerActivity, profile
    labels = random_labels(var, batch, sampler.device, 0)
    sampler.cuda_graphs = False
    sampler.generate(labels, subnet, decode=False, **kw)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        sampler.generate(labels, subnet, decode=False, **kw)
        torch.cuda.synchronize()
    sampler.release()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, kernel_table(prof))


def kernel_table(prof, top: int = 40) -> str:
    """The GPU kernels of a torch.profiler run, by self time, as text."""
    from torch.autograd import DeviceType
    self_us = lambda e: getattr(e, "self_device_time_total", None) or e.self_cuda_time_total  # noqa: E731
    kernels = sorted((e for e in prof.key_averages() if e.device_type == DeviceType.CUDA),
                     key=self_us, reverse=True)
    total = sum(self_us(e) for e in kernels)
    lines = [f"GPU kernel time {total / 1e3:.1f} ms in {sum(e.count for e in kernels)} launches",
             f"{'ms':>8} {'%':>5} {'calls':>6}  kernel"]
    lines += [f"{self_us(e) / 1e3:8.2f} {100 * self_us(e) / total:5.1f} {e.count:6d}  {e.key[:110]}"
              for e in kernels[:top]]
    return "\n".join(lines) + "\n"


# ---- the benchmark ----------------------------------------------------------------------------
def bench_sample(plan: Sweep, var: VAR, vae: VQVAE, code: int | None = None, code_refiner_depth: int = 16,
                 trace_dir=None, trace_configs=None, log=print, on_row=None) -> list[dict]:
    """Every row of `plan` on var/vae, reference mode first, a CoDe row per (mode, batch)
    with `code`; on_row(rows) after each row (the CLI writes the parquet each time)."""
    device = next(var.parameters()).device
    make_refiner = lambda: random_var(code_refiner_depth, device, plan.seed + 1)  # noqa: E731
    knobs = dict(cfg=plan.cfg, top_k=plan.top_k, top_p=plan.top_p)
    rows = []
    for row, sampler, subnet in sweep(var, vae, plan, code, make_refiner):
        rows.append(row)
        log(format_row(row))
        if on_row:
            on_row(rows)
        if (trace_dir and row["mode"] in ("lean", "lean-bf16") and device.type == "cuda" and not row["oom"]
                and subnet is not None and (not trace_configs or row["config"] in trace_configs)):
            trace_lean(sampler, var, subnet, row["batch"],
                       Path(trace_dir) / f"trace_{row['mode']}_{row['config']}_b{row['batch']}.txt", **knobs)
    return rows


def add_parser(sub):
    p = bench.subcommand(sub, "sample")
    bench.model_options(p)
    p.add_argument("--batch", type=int, nargs="+", default=[64], help="batch sizes")
    p.add_argument("--subnet-depth", type=int, nargs="+", default=[30, 16, 8, 4, 2],
                   help="subnet depths d (the model's own depth: plain VAR)")
    p.add_argument("--bridge", type=int, nargs="+", default=[6], help="bridges N of each subnet depth")
    p.add_argument("--config", nargs="*", default=[], metavar="D:N", help="extra (d, N) pairs")
    p.add_argument("--modes", nargs="+", default=["reference", "lean"], choices=MODES,
                   help="sampler modes (variant.stages.profile says what each runs)")
    p.add_argument("--lean-precision", choices=list(PRECISIONS), default=None,
                   help="precision of the lean modes that do not fix one (default: the sampler's)")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="emulate a smaller GPU: cap this process's CUDA memory")
    p.add_argument("--code", type=int, default=None, metavar="N",
                   help="also profile CoDe: the drafter samples N scales, a VAR-d16 the rest")
    p.add_argument("--code-refiner-depth", type=int, default=16, help="depth of CoDe's random refiner")
    p.add_argument("--repeats", type=int, default=5, help="timed passes a row (latency: their median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes before them")
    bench.sampling_options(p)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda where there is one)")
    p.add_argument("--trace-dir", default=None, help="GPU kernel tables of lean configs")
    p.add_argument("--trace-configs", nargs="*", default=None, help="only these configs (e.g. full d2_N6)")
    p.add_argument("--append", action="store_true", help="add to the rows already in --out")
    p.add_argument("--out", required=True, help="parquet file, one row per (mode, configuration, batch)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    import pandas as pd
    device = bench_device(args.device)
    var, vae = bench_models(args.depth, device, args.seed, args.var, args.vae)
    plan = Sweep(modes=tuple(args.modes), batches=tuple(args.batch), subnet_depths=tuple(args.subnet_depth),
                 bridges=tuple(args.bridge), extra=tuple(args.config), repeats=args.repeats, warmup=args.warmup,
                 memory_cap_gib=args.memory_cap_gib, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
                 seed=args.seed, lean_precision=args.lean_precision)
    before = pd.read_parquet(args.out) if args.append and Path(args.out).is_file() else None
    rows = bench_sample(plan, var, vae, args.code, args.code_refiner_depth, args.trace_dir, args.trace_configs,
                        log=lambda s: print(s, flush=True),
                        on_row=lambda rows: write_rows(rows, args.out, before=before))
    write_rows(rows, args.out, before=before)
    print(f"{len(rows)} rows -> {args.out}", file=sys.stderr)
    return 0
