"""Profiling stage: latency, peak memory, KV cache and parameters of sampling.

One row per (mode, configuration, batch): latency excludes VQVAE decoding (median of
`repeats` timed passes after `warmup`, CUDA-synchronised), peak memory is
torch.cuda.max_memory_allocated reset per row, KV MiB is what the cache objects hold.
An out-of-memory error becomes a row with oom=True. A memory cap (the paper's 48 GB
L20) is emulated with torch.cuda.set_per_process_memory_fraction.

Modes: `reference` (ConcatKVCache under fp16 autocast with TF32, the reference's dtypes
and accounting), `lean` (LeanSampler in its default precision, fp16 matmuls with a float32
stream; fused Triton kernels, log-sum-exp split at the last scale, CUDA graphs), two
ablations of it: `lean-eager` (no CUDA graphs) and `lean-unfused` (torch elementwise ops
and a concatenated last scale, with graphs), and `lean-bf16` (the opt-in all-bf16
precision, further from float32 than the reference).

    variant bench sample --depth 30 --batch 64 --subnet-depth 30 16 8 4 2 --bridge 6 \
        --modes reference lean --code 6 --out results/profiling/h100.parquet
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from variant.util.atomic import write_parquet, write_text
from variant.costmodel import REFERENCE, KVAccounting, VARShape, flops, kv_cache_bytes
from variant.models import VAR, VQVAE
from variant.sampling import PRECISIONS, LeanSampler, default_precision, generate
from variant.models.supernet import Subnet

MiB = 2**20
MODES = ("reference", "lean", "lean-eager", "lean-unfused", "lean-bf16")
# what each lean mode switches on: (CUDA graphs, elementwise kernels, last scale, precision;
# None: the sampler's default)
LEAN_MODES = {"lean": (True, "triton", "split", None), "lean-eager": (False, "triton", "split", None),
              "lean-unfused": (True, "torch", "concat", None), "lean-bf16": (True, "triton", "split", "bf16")}
COLUMNS = ["gpu", "mode", "method", "config", "depth", "subnet_depth", "bridge", "batch",
           "memory_cap_gib", "latency_s", "peak_mib", "kv_mib", "params_mib", "images_per_s", "oom"]


# ---- provenance ---------------------------------------------------------------------------
def git_commit() -> str:
    """HEAD of the source tree (-dirty), or $VARIANT_GIT_COMMIT where there is no .git."""
    if os.environ.get("VARIANT_GIT_COMMIT"):
        return os.environ["VARIANT_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def shape_of(var: VAR) -> VARShape:
    return VARShape(depth=var.depth, width=var.width, num_heads=var.num_heads,
                    patch_nums=tuple(var.patch_nums), vocab=var.vocab_size, cvae=var.cvae,
                    num_classes=var.num_classes, shared_aln=var.shared_aln)


def params_bytes(*models) -> int:
    return sum(p.nbytes for m in models for p in m.parameters())


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matmuls and convolutions on or off inside the block, as they were after it."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def reference_precision(device: torch.device):
    """The reference demo's numerics: fp16 autocast with TF32 matmuls (CUDA only; on a
    CPU the reference mode runs in the weights' dtype)."""
    if device.type != "cuda":
        yield
        return
    with tf32(True), torch.autocast("cuda", dtype=torch.float16):
        yield


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e))


def _free(device):
    if device.type == "cuda":  # give the previous row's memory back before the next one
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def measure(run, device: torch.device, repeats: int = 5, warmup: int = 2,
            memory_cap_gib: float | None = None, cleanup=None) -> dict:
    """Time `run()` (which returns the KV bytes its caches held) and record memory.

    Out-of-memory errors, real or injected, give oom=True and NaN timings."""
    cuda = device.type == "cuda"
    row = dict(latency_s=math.nan, latency_min_s=math.nan, latency_max_s=math.nan,
               peak_mib=math.nan, reserved_mib=math.nan, kv_mib=math.nan, oom=False, error="")
    if cleanup:
        cleanup()
    _free(device)
    if cuda:
        if memory_cap_gib:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, memory_cap_gib * 2**30 / total), device)
        torch.cuda.reset_peak_memory_stats(device)
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    try:
        kv = 0
        for _ in range(warmup):
            kv = max(kv, run())
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            kv = max(kv, run())
            sync()
            times.append(time.perf_counter() - t0)
        row.update(latency_s=statistics.median(times), latency_min_s=min(times),
                   latency_max_s=max(times), kv_mib=kv / MiB)
    except Exception as e:  # noqa: BLE001 -- only OOM is recorded, everything else re-raised
        if not _is_oom(e):
            raise
        row.update(oom=True, error=str(e).splitlines()[0][:300] if str(e) else type(e).__name__)
    finally:
        if cuda:
            row.update(peak_mib=torch.cuda.max_memory_allocated(device) / MiB,
                       reserved_mib=torch.cuda.max_memory_reserved(device) / MiB)
        if cleanup:
            cleanup()
        _free(device)
        if cuda and memory_cap_gib:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    return row


def _labels(var: VAR, batch: int, device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, var.num_classes, (batch,), generator=g).to(device)


def _accounting(mode: str, var: VAR, sampler) -> KVAccounting:
    """What the mode's caches hold: the reference's fp32 keys / fp16 values under CUDA
    autocast (weights' dtype on a CPU), every scale; lean: its dtype, no last scale."""
    if mode == "reference":
        if next(var.parameters()).is_cuda:
            return REFERENCE
        e = next(var.parameters()).element_size()
        return KVAccounting(e, e)
    e = torch.empty((), dtype=sampler.dtype).element_size()
    return KVAccounting(e, e, last_scale="none")


def _lean_sampler(var, vae, mode, sampler, precision=None):
    """`sampler` set up for `mode`; a new one if it computes in another precision.
    precision: for the modes that do not fix theirs (default: the sampler's default)."""
    graphs, kernels, last_scale, fixed = LEAN_MODES[mode]
    device = next(var.parameters()).device
    precision = fixed or precision or default_precision(device)
    if sampler is None or sampler.precision_name != precision:
        if sampler is not None:
            sampler.release()
        sampler = LeanSampler(var, vae, precision)
    sampler.kernels, sampler.last_scale = kernels, last_scale
    sampler.cuda_graphs = graphs and device.type == "cuda"
    return sampler


def _row(device, mode, method, config, depth, subnet_depth, bridge, batch, memory_cap_gib, m,
         params, kv_model, tflop, sampling, seed, extra=None, precision=None) -> dict:
    lat = m["latency_s"]
    row = dict(gpu=device_name(device), mode=mode, method=method, config=config, depth=depth,
               subnet_depth=subnet_depth, bridge=bridge, batch=batch,
               memory_cap_gib=float(memory_cap_gib) if memory_cap_gib else math.nan,
               latency_s=lat, peak_mib=m["peak_mib"], kv_mib=m["kv_mib"], params_mib=params / MiB,
               images_per_s=batch / lat if lat == lat else math.nan, oom=m["oom"],
               latency_min_s=m["latency_min_s"], latency_max_s=m["latency_max_s"],
               reserved_mib=m["reserved_mib"], kv_mib_costmodel=kv_model, tflop=tflop,
               tflop_per_s=tflop / lat if lat == lat else math.nan, error=m["error"],
               dtype="float16-autocast" if mode == "reference" and device.type == "cuda" else
               (PRECISIONS[precision].note if precision else "float32"),
               precision="reference" if mode == "reference" else precision,
               cuda_graphs=mode in LEAN_MODES and LEAN_MODES[mode][0] and device.type == "cuda",
               cfg=sampling["cfg"], top_k=sampling["top_k"], top_p=sampling["top_p"],
               git_commit=git_commit(), torch_version=torch.__version__,
               cuda_version=torch.version.cuda or "", seed=seed,
               repeats=sampling["repeats"], warmup=sampling["warmup"])
    row.update(extra or {})
    return row


def profile_config(var: VAR, vae: VQVAE, subnet: Subnet | None, batch: int, mode: str,
                   memory_cap_gib: float | None = None, repeats: int = 5, warmup: int = 2, *,
                   sampler: LeanSampler | None = None, cfg: float = 1.5, top_k: int = 900,
                   top_p: float = 0.96, seed: int = 0, lean_precision: str | None = None) -> dict:
    """One row: sampling `batch` images with `subnet` of `var` in `mode`, on var's device.

    Lean modes use `sampler` if it computes in the mode's precision (else a new one)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    device = next(var.parameters()).device
    subnet = subnet or var.subnet()
    labels = _labels(var, batch, device, seed)
    kw = dict(cfg=cfg, top_k=top_k, top_p=top_p, decode=False)
    torch.manual_seed(seed)
    if mode == "reference":
        def run():
            with reference_precision(device):
                return generate(var, vae, labels, subnet, **kw).kv_bytes
        cleanup = None
    else:
        sampler = _lean_sampler(var, vae, mode, sampler, lean_precision)
        def run():
            sampler.generate(labels, subnet, **kw)
            return sampler.kv_bytes
        cleanup = sampler.release
    m = measure(run, device, repeats, warmup, memory_cap_gib, cleanup)
    precision = None if mode == "reference" else sampler.precision_name
    shape = shape_of(var)
    d = subnet.subnet_depth
    n = subnet.bridge if not subnet.is_full else var.num_scales
    kv_model = kv_cache_bytes(shape, subnet, batch, _accounting(mode, var, sampler)) / MiB
    tflop = flops(shape, subnet, batch)["total"] / 1e12
    sampling = dict(cfg=cfg, top_k=top_k, top_p=top_p, repeats=repeats, warmup=warmup)
    return _row(device, mode, "var" if subnet.is_full else "variant",
                "full" if subnet.is_full else subnet.name, var.depth, d, n, batch, memory_cap_gib,
                m, params_bytes(var if mode == "reference" else sampler.var), kv_model, tflop,
                sampling, seed, precision=precision)


def profile_code(drafter: VAR, refiner: VAR, vae: VQVAE, draft_scales: int, batch: int, mode: str,
                 memory_cap_gib: float | None = None, repeats: int = 5, warmup: int = 2, *,
                 samplers: tuple[LeanSampler, LeanSampler] | None = None, cfg: float = 1.5,
                 top_k: int = 900, top_p: float = 0.96, seed: int = 0, lean_precision: str | None = None) -> dict:
    """CoDe (Table 2): the drafter samples scales < draft_scales, the refiner prefills the
    drafted tokens in one block-causal pass and samples the rest. KV = the larger of the
    two caches; both models' parameters count."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    device = next(drafter.parameters()).device
    labels = _labels(drafter, batch, device, seed)
    kw = dict(cfg=cfg, top_k=top_k, top_p=top_p, decode=False)
    torch.manual_seed(seed)
    if mode == "reference":
        def run():
            with reference_precision(device):
                draft = generate(drafter, vae, labels, stop=draft_scales, **kw)
                refined = generate(refiner, vae, labels, prefix=draft.tokens, **kw)
            return max(draft.kv_bytes, refined.kv_bytes)
        cleanup = None
    else:
        samplers = samplers or (None, None)
        ds = _lean_sampler(drafter, vae, mode, samplers[0], lean_precision)
        rs = _lean_sampler(refiner, vae, mode, samplers[1], lean_precision)
        def run():
            draft = ds.generate(labels, stop=draft_scales, **kw)
            rs.generate(labels, prefix=draft.tokens, **kw)
            return max(ds.kv_bytes, rs.kv_bytes)
        def cleanup():
            ds.release()
            rs.release()
    m = measure(run, device, repeats, warmup, memory_cap_gib, cleanup)
    K = drafter.num_scales
    acc = _accounting(mode, drafter, None if mode == "reference" else ds)
    s_d, s_r = shape_of(drafter), shape_of(refiner)
    draft_shape = VARShape(**{**s_d.__dict__, "patch_nums": s_d.patch_nums[:draft_scales]})
    kv_model = max(kv_cache_bytes(draft_shape, Subnet.full(s_d.depth, draft_scales), batch, acc),
                   kv_cache_bytes(s_r, Subnet.full(s_r.depth, K), batch, acc)) / MiB
    tflop = _code_flops(s_d, s_r, draft_scales, batch) / 1e12
    sampling = dict(cfg=cfg, top_k=top_k, top_p=top_p, repeats=repeats, warmup=warmup)
    return _row(device, mode, "code", f"code_d{drafter.depth}x{draft_scales}+d{refiner.depth}x{K - draft_scales}",
                drafter.depth, refiner.depth, draft_scales, batch, memory_cap_gib, m,
                params_bytes(drafter, refiner), kv_model, tflop, sampling, seed,
                extra=dict(refiner_depth=refiner.depth),
                precision=None if mode == "reference" else ds.precision_name)


def _code_flops(s_d: VARShape, s_r: VARShape, n: int, batch: int) -> float:
    """Drafter on scales < n plus refiner on every scale (its prefill recomputes the draft)."""
    def partial(shape, scales):
        sub = VARShape(**{**shape.__dict__, "patch_nums": tuple(shape.patch_nums[:scales])})
        return flops(sub, Subnet.full(shape.depth, scales), batch)["total"]
    return partial(s_d, n) + partial(s_r, s_r.num_scales)


# ---- building models for the bench --------------------------------------------------------
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


def configs(depth: int, subnet_depths, bridges, extra=()) -> list[tuple[int | None, int | None]]:
    """(d, N) pairs: d == depth is plain VAR; `extra` holds "d:N" strings."""
    out = []
    for d in subnet_depths:
        out += [(None, None)] if d == depth else [(d, n) for n in bridges]
    for s in extra:
        d, n = (int(v) for v in s.split(":"))
        out.append((None, None) if d == depth else (d, n))
    return list(dict.fromkeys(out))


def trace_lean(sampler: LeanSampler, var: VAR, subnet: Subnet, batch: int, path: Path, **kw):
    """GPU kernel times of one eager lean pass (the kernels the graph replays), for notes."""
    from torch.profiler import ProfilerActivity, profile
    labels = _labels(var, batch, sampler.device, 0)
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


def bench_sample(depth: int = 30, batches=(64,), subnet_depths=(30,), bridges=(6,), extra=(),
                 modes=("reference", "lean"), memory_cap_gib=None, code: int | None = None,
                 code_refiner_depth: int = 16, repeats: int = 5, warmup: int = 2, seed: int = 0,
                 device: str | None = None, var_path=None, vae_path=None, cfg=1.5, top_k=900,
                 top_p=0.96, trace_dir=None, trace_configs=None, log=print, on_row=None,
                 lean_precision: str | None = None) -> list[dict]:
    """Every (mode, config, batch) row, reference mode first.
    on_row(rows) is called after each row (the CLI writes the parquet each time)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if var_path:
        from variant.models.checkpoint import load_models
        var, vae = load_models(var_path, vae_path, device)
        var.requires_grad_(False)
    else:
        var, vae = random_var(depth, device, seed), random_vae(device, seed)
    modes = sorted(dict.fromkeys(modes), key=lambda m: m != "reference")
    pairs = configs(var.depth, subnet_depths, bridges, extra)
    kw = dict(cfg=cfg, top_k=top_k, top_p=top_p, seed=seed, lean_precision=lean_precision)
    rows, sampler = [], None
    for mode in modes:
        if mode != "reference":
            sampler = _lean_sampler(var, vae, mode, sampler, lean_precision)
        for batch in batches:
            for d, n in pairs:
                row = profile_config(var, vae, var.subnet(d, n), batch, mode, memory_cap_gib,
                                     repeats, warmup, sampler=sampler, **kw)
                rows.append(row)
                log(_fmt(row))
                if on_row:
                    on_row(rows)
                if (trace_dir and mode in ("lean", "lean-bf16") and device.type == "cuda" and not row["oom"]
                        and (not trace_configs or row["config"] in trace_configs)):
                    trace_lean(sampler, var, var.subnet(d, n), batch,
                               Path(trace_dir) / f"trace_{mode}_{row['config']}_b{batch}.txt",
                               cfg=cfg, top_k=top_k, top_p=top_p)
            if code:
                refiner = random_var(code_refiner_depth, device, seed + 1)
                samplers = None if mode == "reference" else (sampler, None)
                row = profile_code(var, refiner, vae, code, batch, mode, memory_cap_gib, repeats,
                                   warmup, samplers=samplers, **kw)
                rows.append(row)
                log(_fmt(row))
                if on_row:
                    on_row(rows)
                del refiner, samplers
                _free(device)
    return rows


def _fmt(row) -> str:
    return (f"{row['mode']:<10} {row['config']:<18} b={row['batch']:<4} cap={row['memory_cap_gib']:<5} "
            f"lat={row['latency_s']:.3f}s peak={row['peak_mib']:.0f}MiB kv={row['kv_mib']:.1f}MiB "
            f"(model {row['kv_mib_costmodel']:.1f}) params={row['params_mib']:.0f}MiB "
            f"{row['images_per_s']:.1f} img/s{' OOM' if row['oom'] else ''}")


def write_rows(rows: list[dict], out, append: bool = False, before=None):
    """Parquet, written atomically (temporary file + rename); `append` keeps the rows
    already in `out` (or those of the DataFrame `before`)."""
    import pandas as pd
    out = Path(out)
    df = pd.DataFrame(rows)
    if before is None and append and out.is_file():
        before = pd.read_parquet(out)
    if before is not None and len(before):
        df = pd.concat([before, df], ignore_index=True)
    write_parquet(df, out)
    return df


# ---- command line ---------------------------------------------------------------------------
def _add_options(p):
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--batch", type=int, nargs="+", default=[64])
    p.add_argument("--subnet-depth", type=int, nargs="+", default=[30, 16, 8, 4, 2])
    p.add_argument("--bridge", type=int, nargs="+", default=[6])
    p.add_argument("--config", nargs="*", default=[], metavar="D:N", help="extra (d, N) pairs")
    p.add_argument("--modes", nargs="+", default=["reference", "lean"], choices=MODES)
    p.add_argument("--lean-precision", choices=list(PRECISIONS), default=None,
                   help="precision of the lean modes that do not fix one (default: the sampler's)")
    p.add_argument("--memory-cap-gib", type=float, default=None)
    p.add_argument("--code", type=int, default=None, metavar="N",
                   help="also profile CoDe: the drafter samples N scales, a VAR-d16 the rest")
    p.add_argument("--code-refiner-depth", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.96)
    p.add_argument("--device", default=None)
    p.add_argument("--var", default=None, help="a VAR checkpoint (default: random weights)")
    p.add_argument("--vae", default=None)
    p.add_argument("--trace-dir", default=None, help="GPU kernel tables of lean configs")
    p.add_argument("--trace-configs", nargs="*", default=None, help="only these configs (e.g. full d2_N6)")
    p.add_argument("--append", action="store_true", help="add to the rows already in --out")
    p.add_argument("--out", required=True)


def _bench_parsers(sub):
    """The sub-command group of `variant bench`, shared with the other modules that add
    benchmarks: created here only if no module made it yet."""
    import argparse
    if "bench" not in sub.choices:
        sub.add_parser("bench", help="micro-benchmarks").add_subparsers(dest="bench", required=True)
    return next(a for a in sub.choices["bench"]._actions if isinstance(a, argparse._SubParsersAction))


def add_parser(sub):
    p = _bench_parsers(sub).add_parser("sample", help="latency / memory / KV cache of sampling, one parquet row each")
    _add_options(p)
    p.set_defaults(func=_main)
    p = sub.add_parser("profile", help="the profiling stage (same options as `bench sample`)")
    _add_options(p)
    p.add_argument("--profile", default=None, help="params.yaml profile (modes, batches, repeats, cap)")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_main)


def _from_params(args) -> dict:
    """The profiling stage: every knob from the params.yaml profile, so its rows cover the
    profile's tables (depths at N = bridge, the N grid of Figure 5, Table 3's batches)."""
    from variant.config import load_params
    P = load_params(args.params, args.profile)
    prof, S, T = P["profiling"], P["sample"], P["train"]
    K = len(P["model"]["patch_nums"])
    args.modes, args.batch, args.repeats = prof["modes"], prof["batches"], prof["repeats"]
    args.memory_cap_gib = prof.get("memory_cap_gib")
    args.depth = P["model"]["var"]["depth"]
    args.subnet_depth = [args.depth] + sorted(T["subnet_depths"], reverse=True)
    args.bridge = sorted({T["bridge"], *S["bridges"]} - {K})
    args.cfg, args.top_k, args.top_p, args.seed = S["cfg"], S["top_k"], S["top_p"], S["seed"]
    args.device = args.device or P["device"]
    return P


def _main(args) -> int:
    P = _from_params(args) if hasattr(args, "params") else None
    if (args.var is None) != (args.vae is None):
        raise ValueError("--var and --vae go together")
    import pandas as pd
    before = pd.read_parquet(args.out) if args.append and Path(args.out).is_file() else None
    rows = bench_sample(depth=args.depth, batches=args.batch, subnet_depths=args.subnet_depth,
                        bridges=args.bridge, extra=args.config, modes=args.modes,
                        memory_cap_gib=args.memory_cap_gib, code=args.code,
                        code_refiner_depth=args.code_refiner_depth, repeats=args.repeats,
                        warmup=args.warmup, seed=args.seed, device=args.device, var_path=args.var,
                        vae_path=args.vae, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
                        trace_dir=args.trace_dir, trace_configs=args.trace_configs, log=lambda s: print(s, flush=True),
                        lean_precision=args.lean_precision,
                        on_row=lambda rows: write_rows(rows, args.out, before=before))
    if P is not None:   # the stage's rows say which profile and params made them
        for row in rows:
            row.update(profile=P["profile"], config_hash=P["config_hash"])
    write_rows(rows, args.out, before=before)
    print(f"{len(rows)} rows -> {args.out}", file=sys.stderr)
    return 0
