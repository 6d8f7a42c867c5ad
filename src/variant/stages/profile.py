"""The profile stage: latency, peak memory, KV cache and parameters of sampling.

One row per (mode, configuration, batch): latency excludes VQVAE decoding (median of
`repeats` timed passes after `warmup`, CUDA-synchronised), peak memory is
torch.cuda.max_memory_allocated reset per row, KV MiB is what the cache objects hold.
An out-of-memory error becomes a row with oom=True. A memory cap (the paper's 48 GB
L20) is emulated with torch.cuda.set_per_process_memory_fraction.

Modes: `reference` (ConcatKVCache under fp16 autocast with TF32, the reference's dtypes
and accounting), `lean` (LeanSampler in its default precision, fp16 matmuls with a float32
stream; fused Triton kernels, log-sum-exp split at the last scale, CUDA graphs), two
ablations of it: `lean-eager` (no CUDA graphs) and `lean-unfused` (torch elementwise ops
and a concatenated last scale, with graphs), `lean-bf16` (the opt-in all-bf16
precision, further from float32 than the reference) and `lean-fp8` (the opt-in fp8 block
matmuls; a GPU of compute capability 8.9 or later).

The stage measures what params `profiling` asks for on the profile's checkpoints;
`variant bench sample` (variant.bench.sample) runs the same sweep with every knob on the
command line, random weights and CoDe rows.
"""
from __future__ import annotations

import contextlib
import gc
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from variant.costmodel import REFERENCE, KVAccounting, VARShape, flops, kv_cache_bytes
from variant.models import VAR, VQVAE
from variant.models.supernet import Subnet
from variant.options import params_options
from variant.sampling import PRECISIONS, LeanSampler, default_precision, generate, tf32
from variant.util.atomic import write_parquet
from variant.util.provenance import device_name, git_commit

MiB = 2**20
MODES = ("reference", "lean", "lean-eager", "lean-unfused", "lean-bf16", "lean-fp8")
# what each lean mode switches on: (CUDA graphs, elementwise kernels, last scale, precision;
# None: the sampler's default)
LEAN_MODES = {"lean": (True, "triton", "split", None), "lean-eager": (False, "triton", "split", None),
              "lean-unfused": (True, "torch", "concat", None), "lean-bf16": (True, "triton", "split", "bf16"),
              "lean-fp8": (True, "triton", "split", "fp8")}
COLUMNS = ["gpu", "mode", "method", "config", "depth", "subnet_depth", "bridge", "batch",
           "memory_cap_gib", "latency_s", "peak_mib", "kv_mib", "params_mib", "images_per_s", "oom"]


def shape_of(var: VAR) -> VARShape:
    return VARShape(depth=var.depth, width=var.width, num_heads=var.num_heads,
                    patch_nums=tuple(var.patch_nums), vocab=var.vocab_size, cvae=var.cvae,
                    num_classes=var.num_classes, shared_aln=var.shared_aln)


def params_bytes(*models) -> int:
    return sum(p.nbytes for m in models for p in m.parameters())


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


def random_labels(var: VAR, batch: int, device, seed: int) -> torch.Tensor:
    """`batch` class labels drawn from `seed` (on the CPU, so every device gets the same)."""
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
    labels = random_labels(var, batch, device, seed)
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
    labels = random_labels(drafter, batch, device, seed)
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


# ---- the sweep: every (mode, batch, configuration) ------------------------------------------
@dataclass(frozen=True)
class Sweep:
    """What one profiling run measures, and with which sampling knobs."""
    modes: tuple[str, ...] = ("reference", "lean")
    batches: tuple[int, ...] = (64,)
    subnet_depths: tuple[int, ...] = (30,)   # the model's own depth: plain VAR
    bridges: tuple[int, ...] = (6,)
    extra: tuple[str, ...] = ()              # more (d, N) pairs as "d:N"
    repeats: int = 5
    warmup: int = 2
    memory_cap_gib: float | None = None
    cfg: float = 1.5
    top_k: int = 900
    top_p: float = 0.96
    seed: int = 0
    lean_precision: str | None = None        # lean modes that fix none (None: the sampler's default)

    @classmethod
    def from_params(cls, P: dict) -> "Sweep":
        """The profile's sweep, so its rows cover the profile's tables: the full model and
        every trained depth, at N = train.bridge and the N grid of Figure 5 (N < K), at
        Table 3's batches, sampled with the sample stage's knobs."""
        prof, S, T = P["profiling"], P["sample"], P["train"]
        depth, K = P["model"]["var"]["depth"], len(P["model"]["patch_nums"])
        return cls(modes=tuple(prof["modes"]), batches=tuple(prof["batches"]), repeats=prof["repeats"],
                   memory_cap_gib=prof.get("memory_cap_gib"),
                   subnet_depths=(depth, *sorted(T["subnet_depths"], reverse=True)),
                   bridges=tuple(sorted({T["bridge"], *S["bridges"]} - {K})),
                   cfg=S["cfg"], top_k=S["top_k"], top_p=S["top_p"], seed=S["seed"])

    def sampling(self) -> dict:
        return dict(cfg=self.cfg, top_k=self.top_k, top_p=self.top_p, seed=self.seed,
                    lean_precision=self.lean_precision)


def configs(depth: int, subnet_depths, bridges, extra=()) -> list[tuple[int | None, int | None]]:
    """(d, N) pairs: d == depth is plain VAR; `extra` holds "d:N" strings."""
    out = []
    for d in subnet_depths:
        out += [(None, None)] if d == depth else [(d, n) for n in bridges]
    for s in extra:
        d, n = (int(v) for v in s.split(":"))
        out.append((None, None) if d == depth else (d, n))
    return list(dict.fromkeys(out))


def sweep(var: VAR, vae: VQVAE, plan: Sweep, draft_scales: int | None = None, make_refiner=None):
    """Every row of `plan`, reference mode first, as (row, the lean sampler or None, subnet).
    With draft_scales, each (mode, batch) ends with a CoDe row: `var` drafts that many
    scales, make_refiner() refines the rest (subnet None)."""
    device = next(var.parameters()).device
    modes = sorted(dict.fromkeys(plan.modes), key=lambda m: m != "reference")
    pairs = configs(var.depth, plan.subnet_depths, plan.bridges, plan.extra)
    timing = (plan.memory_cap_gib, plan.repeats, plan.warmup)
    sampler = None
    for mode in modes:
        if mode != "reference":
            sampler = _lean_sampler(var, vae, mode, sampler, plan.lean_precision)
        for batch in plan.batches:
            for d, n in pairs:
                subnet = var.subnet(d, n)
                yield profile_config(var, vae, subnet, batch, mode, *timing, sampler=sampler,
                                     **plan.sampling()), sampler, subnet
            if draft_scales:
                refiner = make_refiner()
                samplers = None if mode == "reference" else (sampler, None)
                yield profile_code(var, refiner, vae, draft_scales, batch, mode, *timing, samplers=samplers,
                                   **plan.sampling()), None, None
                del refiner, samplers
                _free(device)


def format_row(row) -> str:
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


# ---- the stage ------------------------------------------------------------------------------
def run_profile(P: dict, var_path, vae_path, out, device: str | None = None) -> list[dict]:
    """The profile's sweep on its checkpoints; the parquet is rewritten after every row, so
    a job stopped by its time limit keeps what it measured. Each row says which profile and
    params made it."""
    from variant.models.checkpoint import load_models
    from variant.util.devices import resolve_device
    var, vae = load_models(var_path, vae_path, resolve_device(device, P))
    var.requires_grad_(False)
    rows = []
    for row, _, _ in sweep(var, vae, Sweep.from_params(P)):
        rows.append(dict(row, profile=P["profile"], config_hash=P["config_hash"]))
        print(format_row(row), flush=True)
        write_rows(rows, out)
    return rows


def add_parser(sub):
    p = sub.add_parser("profile")
    params_options(p, reads="`profiling` says what to measure")
    p.add_argument("--var", required=True, help="the profile's VAR checkpoint")
    p.add_argument("--vae", required=True, help="its VQVAE checkpoint")
    p.add_argument("--out", required=True, help="parquet file, one row per (mode, configuration, batch)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the profile's `device`)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from variant.config import load_params
    from variant.util.files import require_file
    require_file(args.var, "--var: the VAR checkpoint to profile")
    require_file(args.vae, "--vae: its VQVAE checkpoint")
    rows = run_profile(load_params(args.params, args.profile), args.var, args.vae, args.out, args.device)
    print(f"{len(rows)} rows -> {args.out}", file=sys.stderr)
    return 0
