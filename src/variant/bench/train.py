"""`variant bench train`: training throughput of a random-weight VAR on random tokens.

One row per (depth, batch per GPU, dtype, subnet probability, attention). A step is
`accum` micro-batches of `batch` per process, then the all-reduce and AdamW update, as in
training (variant.training.step). MFU counts FLOPs with variant.costmodel; results and
their reading are in benchmarks/README.md. With `reference`, each depth is also measured
as the reference trainer runs its step (REFERENCE_RECIPE, at the first batch shape), in the
same process, and every row records its speed against that one at the same samples per
step (`vs_reference`).
"""
from __future__ import annotations

import itertools
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from variant import bench
from variant.costmodel import PAPER_PATCH_NUMS, VARShape, training_step_flops
from variant.models.supernet import Subnet
from variant.models.var import TEACHER_FORCING_ATTENTION
from variant.training.distributed import DistInfo, init_distributed
from variant.training.schedule import draw_subnet
from variant.training.step import AUTOCAST, StepRunner, compile_blocks, enable_activation_checkpointing, make_optimizer
from variant.util.atomic import write_text
from variant.util.atomic import write_parquet
from variant.util.provenance import device_name, git_commit

PEAK_TFLOPS = {  # dense tensor-core peaks per GPU (fp32: no TF32), SXM parts
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
}
# a re-measured configuration replaces its earlier row
# The reference trainer's step: fp16 autocast with GradScaler, eager (no torch.compile), one
# attention call with the L x L block-causal mask; fused AdamW, clipping and drop-path as ours.
REFERENCE_RECIPE = {"dtype": "fp16", "compiled": False, "attention": "masked"}
ROW_KEY = ["gpu", "n_gpus", "depth", "batch_per_gpu", "accum", "dtype", "subnet_prob", "attention",
           "activation_checkpointing", "compiled", "drop_path"]


@dataclass(frozen=True)
class TrainBench:
    """What to measure: every combination of the tuples is one row."""
    depths: tuple[int, ...] = (16,)
    batches: tuple[int, ...] = (16,)        # micro-batch per process
    dtypes: tuple[str, ...] = ("bf16",)
    probs: tuple[float, ...] = (0.0, 1.0)   # subnet probability of a step
    attentions: tuple[str, ...] = ("masked",)
    steps: int = 5
    warmup: int = 2
    subnet_depth: int | None = None         # None: depth // 2 (at least 2)
    bridge: int = 6
    patch_nums: tuple[int, ...] = PAPER_PATCH_NUMS
    activation_checkpointing: bool = False
    accum: tuple[int, ...] = (1,)           # micro-batches per step: one for all batches, or one each
    compiled: bool = False
    trace: str | None = None                # GPU kernel table of one step of the first row
    drop_path: float | None = None          # None: the reference's 0.1 x depth / 24
    reference: bool = False                 # also measure REFERENCE_RECIPE per (depth, batch)


def device_slug(device: torch.device) -> str:
    """A file-name form of the device: `cpu`, or the GPU's name (`h100-80gb-hbm3`)."""
    if device.type != "cuda":
        return "cpu"
    name = device_name(device).lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def bench_train(cfg: TrainBench, device: str = "cpu", echo=print) -> pd.DataFrame:
    """Measure every configuration of `cfg`; attrs["slug"] names the device, attrs["main"]
    says whether this process writes the rows."""
    info = init_distributed(device)
    commit = git_commit()
    rows = []
    shapes = step_shapes(cfg.batches, cfg.accum)
    configs = [(depth, shape, dtype, p, attention, cfg.compiled) for depth, shape, dtype, p, attention
               in itertools.product(cfg.depths, shapes, cfg.dtypes, cfg.probs, cfg.attentions)]
    if cfg.reference:   # first, at the first shape, before any compiled model warms the GPU
        r = REFERENCE_RECIPE
        refs = [(depth, shapes[0], r["dtype"], 0.0, r["attention"], r["compiled"]) for depth in cfg.depths]
        configs = refs + [c for c in configs if c not in refs]
    for depth, (batch, accum), dtype, p, attention, compiled in configs:
        row = measure(cfg, info, depth, batch, accum, dtype, p, attention, compiled,
                      trace=cfg.trace if not rows else None)
        rows.append(row | {"seed": 0, "git_commit": commit, "torch_version": torch.__version__})
        oom, dp = row["oom"], row["drop_path"]
        echo(f"d{depth} batch {batch}/gpu x{accum} x{info.world} {dtype} p={p} {attention}"
             f"{' compiled' if compiled else ''}{' ckpt' if cfg.activation_checkpointing else ''}"
             f" drop-path {dp:g}: "
             + ("OOM" if oom else f"{row['tokens_per_s']:,.0f} tokens/s, MFU {row['mfu']:.3f}, "
                f"peak {row['peak_mib']:,.0f} MiB"))
    df = pd.DataFrame(rows)
    if cfg.reference:
        df["vs_reference"] = df["tokens_per_s"] / df.apply(lambda row: reference_tokens_per_s(df, row), axis=1)
    df.attrs["slug"] = device_slug(info.device)
    df.attrs["main"] = info.main
    if info.owns_group:
        dist.destroy_process_group()
    return df


def step_shapes(batches, accums) -> list[tuple[int, int]]:
    """(micro-batch, accumulation) pairs: one accumulation for every batch, or one each."""
    if len(accums) == 1:
        return [(b, accums[0]) for b in batches]
    if len(accums) != len(batches):
        raise ValueError(f"--accum takes one value or one per --batch-per-gpu ({len(batches)}), got {len(accums)}")
    return list(zip(batches, accums))


def reference_tokens_per_s(df: pd.DataFrame, row) -> float:
    """tokens/s of the reference recipe's row at `row`'s depth and samples per step per GPU
    (micro-batch x accumulation: the same optimizer step however it is split), subnet p 0."""
    per_step = df["batch_per_gpu"] * df["accum"]
    ref = df[(df["depth"] == row["depth"]) & (per_step == row["batch_per_gpu"] * row["accum"])
             & (df["subnet_prob"] == 0.0)]
    for key, value in REFERENCE_RECIPE.items():
        ref = ref[ref[key] == value]
    return float(ref["tokens_per_s"].iloc[0]) if len(ref) else math.nan


def measure(cfg: TrainBench, info: DistInfo, depth: int, batch: int, accum: int, dtype: str, p: float,
            attention: str, compiled: bool, trace: str | None = None) -> dict:
    """One row: warm-up steps, then `cfg.steps` timed steps of a fresh random VAR."""
    from variant.models import VAR
    from variant.models.vqvae import MultiScaleQuantizer
    cuda = info.device.type == "cuda"
    torch.manual_seed(0)
    dp = 0.1 * depth / 24 if cfg.drop_path is None else cfg.drop_path
    with info.device:   # initialised where it runs: a 2B-parameter init on the CPU takes long
        model = VAR(depth=depth, patch_nums=cfg.patch_nums, drop_path_rate=dp, attention=attention).train()
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    if compiled:
        compile_blocks(model)
    quant = MultiScaleQuantizer(4096, 32, cfg.patch_nums).to(info.device).eval().requires_grad_(False)
    opt = make_optimizer(model, 1e-6, (0.9, 0.95), 0.05, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=dtype == "fp16")
    runner = StepRunner(model, quant, opt, scaler, info, dtype, 1.0, batch, accum, 0)
    sub = Subnet(depth, cfg.subnet_depth or max(2, depth // 2), min(cfg.bridge, len(cfg.patch_nums)),
                 len(cfg.patch_nums))
    shape = VARShape.of(model)
    g = torch.Generator().manual_seed(1)
    G = runner.global_batch
    tokens = torch.randint(0, 4096, (G, model.L), generator=g)
    tokens = tokens.pin_memory() if cuda else tokens
    labels = torch.randint(0, 1000, (G,), generator=g)
    fetch = lambda pos: (tokens[pos], labels[pos])  # noqa: E731
    oom, flops, t = False, 0.0, 0.0
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(info.device)
    try:
        for i in range(cfg.warmup + cfg.steps):
            use = draw_subnet(0, i, p)
            if i == cfg.warmup:
                if cuda:
                    torch.cuda.synchronize(info.device)
                t0 = time.perf_counter()
            runner.run(i, fetch, sub if use else None)
            if i >= cfg.warmup:
                flops += training_step_flops(shape, sub if use else Subnet.full(depth, model.num_scales), G)
        if cuda:
            torch.cuda.synchronize(info.device)
        t = time.perf_counter() - t0
        if trace and cuda:
            step = cfg.warmup + cfg.steps
            write_kernel_table(trace, lambda: runner.run(step, fetch, sub if draw_subnet(0, step, p) else None),
                               info.device)
    except torch.OutOfMemoryError:
        oom = True
    if cuda:
        peak = torch.cuda.max_memory_allocated(info.device) / 2**20
    else:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = device_name(info.device)
    peak_flops = next((v.get(dtype) for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    tps = math.nan if oom else cfg.steps * G * model.L / t
    mfu = flops / t / (peak_flops * 1e12 * info.world) if peak_flops and not oom else math.nan
    return {"gpu": gpu, "n_gpus": info.world, "depth": depth, "batch_per_gpu": batch,
            "accum": accum, "dtype": dtype, "subnet_prob": float(p), "attention": attention,
            "activation_checkpointing": bool(cfg.activation_checkpointing),
            "compiled": bool(compiled), "drop_path": float(dp),
            "tokens_per_s": tps, "step_s": math.nan if oom else t / cfg.steps, "mfu": mfu,
            "peak_mib": peak, "oom": oom}


def write_kernel_table(path, step, device) -> None:
    """Profile one call of `step` and write its GPU kernels by time to `path`."""
    from torch.profiler import ProfilerActivity, profile

    from variant.bench.sample import kernel_table
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, kernel_table(prof, top=50))


def add_parser(sub):
    b = bench.subcommand(sub, "train", "training throughput of a random VAR on random tokens")
    b.add_argument("--depth", type=int, nargs="+", default=[16], help="VAR depths (width 64 x depth)")
    b.add_argument("--batch-per-gpu", type=int, nargs="+", default=[16], help="micro-batch sizes per process")
    b.add_argument("--dtype", nargs="+", choices=list(AUTOCAST), default=["bf16"], help="training precisions")
    b.add_argument("--subnet-prob", type=float, nargs="+", default=[0.0, 1.0],
                   help="probabilities that a step trains the subnet")
    b.add_argument("--subnet-depth", type=int, default=None, help="default: depth // 2")
    b.add_argument("--bridge", type=int, default=6, help="the subnet's bridge scales N")
    b.add_argument("--patch-nums", type=int, nargs="+", default=list(PAPER_PATCH_NUMS),
                   help="token map sides of the scales (default: the paper's 256 px)")
    b.add_argument("--steps", type=int, default=5, help="timed optimizer steps per row")
    b.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps before them")
    b.add_argument("--activation-checkpointing", action="store_true", help="recompute blocks in the backward")
    b.add_argument("--attention", nargs="+", choices=TEACHER_FORCING_ATTENTION, default=["masked"],
                   help="teacher-forcing attention implementations")
    b.add_argument("--accum", type=int, nargs="+", default=[1],
                   help="micro-batches per optimizer step: one value, or one per --batch-per-gpu (paired)")
    b.add_argument("--compile", action="store_true", help="torch.compile each block")
    b.add_argument("--trace", default=None, help="write a GPU kernel table of one step (first row) here")
    b.add_argument("--reference", action="store_true",
                   help="also measure the reference trainer's step (fp16 autocast + GradScaler, eager, "
                        "masked attention) at each depth and batch, and each row's speed against it")
    b.add_argument("--drop-path", type=float, default=None,
                   help="stochastic-depth rate (default: the reference's 0.1 x depth / 24; 0 turns it off)")
    # no --profile/--params: the model is random and sized by the options above
    b.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    b.add_argument("--out", default=None, help="default: results/benchmarks/train_<device>.parquet")
    b.set_defaults(func=_main)


def _main(args) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TrainBench(tuple(args.depth), tuple(args.batch_per_gpu), tuple(args.dtype), tuple(args.subnet_prob),
                     tuple(args.attention), args.steps, args.warmup, args.subnet_depth, args.bridge,
                     tuple(args.patch_nums), args.activation_checkpointing, tuple(args.accum), args.compile,
                     args.trace, args.drop_path, args.reference)
    df = bench_train(cfg, device)
    if not df.attrs["main"]:
        return 0
    out = Path(args.out or f"results/benchmarks/train_{df.attrs['slug']}.parquet")
    if out.is_file():   # keep earlier rows, replacing re-measured configurations
        old = pd.read_parquet(out)
        if "drop_path" not in old:   # rows measured before the option trained without drop-path
            old["drop_path"] = 0.0
        df = pd.concat([old, df]).drop_duplicates(ROW_KEY, keep="last").reset_index(drop=True)
    write_parquet(df, out)
    print(f"{out}: {len(df)} row(s)")
    return 0
