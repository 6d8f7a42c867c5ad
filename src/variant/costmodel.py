"""Analytic cost of VAR sampling: tokens, KV-cache bytes, parameters and FLOPs.

Counts follow from the architecture alone (no weights, no device), so they can be
checked against measurements: the "reference" KV accounting reproduces what the
reference implementation holds (keys float32 out of the L2 normalisation, values
float16, every scale of every layer cached), and a "lean" sampler must hold less.
All counts include classifier-free guidance, which doubles the rows of every batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from variant.models.supernet import Subnet

MiB = 2**20
PAPER_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@dataclass(frozen=True)
class VARShape:
    """The sizes that set VAR's cost. `from_depth` gives the released models' rule."""

    depth: int
    width: int
    num_heads: int
    patch_nums: tuple[int, ...] = PAPER_PATCH_NUMS
    vocab: int = 4096
    cvae: int = 32
    num_classes: int = 1000
    mlp_ratio: float = 4.0
    shared_aln: bool = False

    @classmethod
    def from_depth(cls, depth: int, **kw) -> "VARShape":
        """Released VAR-d{depth}: width 64*D, D heads of 64 (VAR-d36 shares its AdaLN)."""
        kw.setdefault("shared_aln", depth >= 36)
        return cls(depth=depth, width=64 * depth, num_heads=depth, **kw)

    @classmethod
    def of(cls, model) -> "VARShape":
        """The shape of a built VAR module."""
        hidden = model.blocks[0].ffn.fc1.out_features
        return cls(depth=model.depth, width=model.width, num_heads=model.num_heads,
                   patch_nums=tuple(model.patch_nums), vocab=model.vocab_size, cvae=model.cvae,
                   num_classes=model.num_classes, mlp_ratio=hidden / model.width,
                   shared_aln=model.shared_aln)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def tokens(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def hidden(self) -> int:
        return round(self.width * self.mlp_ratio)


def subnet_of(shape: VARShape, subnet_depth: int | None = None, bridge: int | None = None) -> Subnet:
    if subnet_depth is None or subnet_depth == shape.depth:
        return Subnet.full(shape.depth, shape.num_scales)
    return Subnet(shape.depth, subnet_depth, shape.num_scales if bridge is None else bridge,
                  shape.num_scales)


def tokens_per_layer(shape: VARShape, subnet: Subnet, last_scale: bool = True) -> list[int]:
    """Tokens each layer has in its KV cache after sampling: a layer holds a scale's
    tokens only if it ran at that scale. `last_scale=False` leaves out the last scale,
    which no later scale reads."""
    scales = range(shape.num_scales if last_scale else shape.num_scales - 1)
    return [sum(shape.patch_nums[k] ** 2 for k in scales if subnet.runs(layer, k))
            for layer in range(shape.depth)]


@dataclass(frozen=True)
class KVAccounting:
    """How a sampler stores its KV cache.

    key_bytes/value_bytes: bytes per element. last_scale: "every_layer" (each layer keeps
    the last scale, as the reference does), "one_layer" (a scratch buffer for the layer
    being computed) or "none" (the last scale is attended to without being stored).
    """

    key_bytes: int
    value_bytes: int
    last_scale: str = "every_layer"

    def __post_init__(self):
        if self.last_scale not in ("every_layer", "one_layer", "none"):
            raise ValueError(f"last_scale must be every_layer, one_layer or none, got {self.last_scale!r}")


REFERENCE = KVAccounting(key_bytes=4, value_bytes=2, last_scale="every_layer")
LEAN_FP16 = KVAccounting(key_bytes=2, value_bytes=2, last_scale="none")
ACCOUNTINGS = {"reference": REFERENCE, "lean": LEAN_FP16}


def kv_cache_bytes(shape: VARShape, subnet: Subnet, batch: int,
                   accounting: KVAccounting = REFERENCE, cfg: bool = True) -> int:
    rows = batch * (2 if cfg else 1)
    per_token = rows * shape.width * (accounting.key_bytes + accounting.value_bytes)
    every = accounting.last_scale == "every_layer"
    tokens = sum(tokens_per_layer(shape, subnet, last_scale=every))
    if accounting.last_scale == "one_layer":
        tokens += shape.patch_nums[-1] ** 2
    return tokens * per_token


def kv_cache_mib(shape: VARShape, subnet_depth: int | None = None, bridge: int | None = None,
                 batch: int = 64, mode: str | KVAccounting = "reference", cfg: bool = True) -> float:
    """KV cache in MiB, e.g. kv_cache_mib(VARShape.from_depth(30), 16, 6, 64) -> 17091.6."""
    accounting = ACCOUNTINGS[mode] if isinstance(mode, str) else mode
    return kv_cache_bytes(shape, subnet_of(shape, subnet_depth, bridge), batch, accounting, cfg) / MiB


def parameter_count(shape: VARShape) -> int:
    """Parameters of the VAR transformer (buffers excluded), from its module shapes."""
    C, H, V = shape.width, shape.hidden, shape.vocab
    block = (3 * C * C + 2 * C          # mat_qkv (no bias) + q_bias, v_bias
             + C * C + C                # proj
             + C * H + H + H * C + C    # fc1, fc2
             + shape.num_heads)         # scale_mul_1H11
    block += 6 * C if shape.shared_aln else C * 6 * C + 6 * C  # ada_gss or ada_lin
    shared = C * 6 * C + 6 * C if shape.shared_aln else 0
    return (shape.depth * block + shared
            + shape.cvae * C + C                   # word_embed
            + (shape.num_classes + 1) * C          # class_emb
            + C + shape.tokens * C                 # pos_start, pos_1LC
            + shape.num_scales * C                 # lvl_embed
            + C * 2 * C + 2 * C                    # head_nm.ada_lin
            + C * V + V)                           # head


def forward_flops(shape: VARShape, subnet: Subnet, rows: int) -> dict[str, int]:
    """Multiply-adds x2 of one forward pass over all scales of `rows` sequences."""
    C, H = shape.width, shape.hidden
    per_token_layer = 2 * (4 * C * C + 2 * C * H)          # qkv, proj, fc1, fc2
    dense = attention = conditioning = 0
    seen = [0] * shape.depth                               # tokens cached per layer so far
    for k, p in enumerate(shape.patch_nums):
        n = p * p
        for layer in subnet.layers_at(k):
            seen[layer] += n
            dense += rows * n * per_token_layer
            attention += rows * 2 * 2 * n * seen[layer] * C   # QK^T and AV
            conditioning += rows * 2 * C * 6 * C              # the block's AdaLN, per call
        conditioning += rows * 2 * C * 2 * C                  # head AdaLN
    head = rows * shape.tokens * 2 * C * shape.vocab
    # the first scale is the class token's start: word_embed sees the L - p0^2 later tokens
    embed = rows * (shape.tokens - shape.patch_nums[0] ** 2) * 2 * shape.cvae * C
    return {"dense": dense, "attention": attention, "head": head, "conditioning": conditioning,
            "embed": embed}


def flops(shape: VARShape, subnet: Subnet, batch: int, cfg: bool = True) -> dict[str, float]:
    """Multiply-adds x2 of one sampling pass, split by where they are spent."""
    c = forward_flops(shape, subnet, batch * (2 if cfg else 1))
    total = c["dense"] + c["attention"] + c["conditioning"] + c["head"] + c["embed"]
    return {"dense": float(c["dense"]), "attention": float(c["attention"]), "head": float(c["head"]),
            "other": float(c["conditioning"] + c["embed"]), "total": float(total)}


def training_step_flops(shape: VARShape, subnet: Subnet, batch: int) -> float:
    """Model FLOPs of one training step of `batch` sequences, as nanoGPT's MFU counts them:
    forward + backward = 3 x the forward's matmuls (weights each token passes through, and
    the block-causal attention scores). AdaLN projections run per sample, not per token, and
    activation recomputation is not model work: both are left out."""
    c = forward_flops(shape, subnet, batch)
    return 3.0 * (c["dense"] + c["attention"] + c["head"] + c["embed"])


def add_parser(sub):
    p = sub.add_parser("cost", help="analytic KV cache, parameters and FLOPs of sampling")
    p.add_argument("--depth", type=int, default=30, help="VAR depth D (released shapes: width 64 D)")
    p.add_argument("--subnet-depth", type=int, nargs="*", default=[30, 16, 8, 4, 2],
                   help="subnet depths d to list (d = D is the full model)")
    p.add_argument("--bridge", type=int, nargs="*", default=[6], help="bridge scales N of each subnet")
    p.add_argument("--batch", type=int, default=64, help="images per batch (x2 rows with guidance)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    shape = VARShape.from_depth(args.depth)
    print(f"VAR-d{args.depth}: {parameter_count(shape) / 1e9:.3f}B parameters, batch {args.batch} (x2 for CFG)")
    print(f"{'config':<12} {'KV ref MiB':>11} {'KV lean MiB':>12} {'TFLOP':>8}")
    for d in args.subnet_depth:
        for n in args.bridge if d != args.depth else [shape.num_scales]:
            name = f"d{d}" + (f" N={n}" if d != args.depth else "")
            print(f"{name:<12} {kv_cache_mib(shape, d, n, args.batch):>11.1f} "
                  f"{kv_cache_mib(shape, d, n, args.batch, 'lean'):>12.1f} "
                  f"{flops(shape, subnet_of(shape, d, n), args.batch)['total'] / 1e12:>8.1f}")
    return 0
