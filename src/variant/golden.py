"""Check an installation against golden vectors of the reference implementation.

A golden directory holds config.json, vae.pth, var.pth and vectors.pth (the layout of
shared/golden/*/). Every comparison the reference's tolerances allow is run and
reported with its maximum error: tokens exactly, floats within 1e-4 (float32). Both
samplers that claim the reference's tokens are checked: the reference loop, and the lean
sampler in its float32 precision (eagerly, and on CUDA through its captured graph too).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from variant.models.checkpoint import CheckpointError, build_vae, build_var, read_state_dict, var_config
from variant.sampling import LeanSampler, generate, tf32

FLOAT_TOL = 1e-4
SAMPLERS = ("reference", "lean")


@dataclass
class Check:
    name: str
    max_error: float
    tolerance: float   # 0 means exact equality

    @property
    def ok(self) -> bool:
        return self.max_error <= self.tolerance


def _max_abs(a, b) -> float:
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return float("inf")
        return max((_max_abs(x, y) for x, y in zip(a, b)), default=0.0)
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        return float("inf")
    return (a.double() - b.double().to(a.device)).abs().max().item() if a.numel() else 0.0


def _mismatches(a: list, b: list) -> float:
    """Count of differing integer entries (tokens), inf on a shape mismatch."""
    if len(a) != len(b):
        return float("inf")
    total = 0
    for x, y in zip(a, b):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.shape != y.shape:
            return float("inf")
        total += int((x.cpu() != y.cpu()).sum())
    return float(total)


def load_golden(directory: str | Path):
    directory = Path(directory)
    missing = [f for f in ("config.json", "vae.pth", "var.pth", "vectors.pth") if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: not a golden directory, missing {', '.join(missing)}")
    config = json.loads((directory / "config.json").read_text())
    vectors = torch.load(directory / "vectors.pth", map_location="cpu", weights_only=True)
    return config, read_state_dict(directory / "var.pth"), read_state_dict(directory / "vae.pth"), vectors


def verify_golden(directory: str | Path, device: str = "cpu", samplers=SAMPLERS) -> list[Check]:
    with tf32(False):   # TF32 would cost ~1e-3 of precision; the tolerances are for true float32
        return _verify(directory, device, samplers)


@torch.no_grad()
def _verify(directory, device, samplers) -> list[Check]:
    config, var_sd, vae_sd, vec = load_golden(directory)
    build = config["build"]
    var = build_var(var_sd, f"{directory}/var.pth").to(device).eval()
    vae = build_vae(vae_sd, var.patch_nums, f"{directory}/vae.pth").to(device).eval()

    inferred = var_config(var_sd)
    expected = dict(depth=build["depth"], width=build["embed_dim"], num_heads=build["num_heads"],
                    num_classes=build["num_classes"], vocab_size=build["V"], cvae=build["Cvae"],
                    patch_nums=tuple(build["patch_nums"]), shared_aln=build["shared_aln"])
    checks = [Check("sizes read off var.pth equal config.json",
                    float(sum(inferred[k] != v for k, v in expected.items())), 0)]

    img, label = vec["img"].to(device), vec["label"].to(device)
    idx = vae.img_to_tokens(img)
    checks.append(Check("token maps (idx_list)", _mismatches(idx, vec["idx_list"]), 0))
    gt_idx = [t.to(device) for t in vec["idx_list"]]
    checks.append(Check("teacher-forcing input", _max_abs(vae.quantize.teacher_forcing_input(gt_idx), vec["var_input"]), FLOAT_TOL))
    checks.append(Check("reconstruction", _max_abs(vae.tokens_to_img(gt_idx), vec["recon_last"]), FLOAT_TOL))
    logits = var(label, vec["var_input"].to(device))
    checks.append(Check("teacher-forced logits", _max_abs(logits, vec["teacher_forced_logits"]), FLOAT_TOL))

    lean = LeanSampler(var, vae, precision="fp32", cuda_graphs=False) if "lean" in samplers else None
    for d, n in config["subnets"]:
        ref, subnet = vec["infer"][f"d{d}_N{n}"], var.subnet(d, n)
        kw = dict(cfg=config["cfg"], top_k=1)
        if "reference" in samplers:
            out = generate(var, vae, label, subnet, record_logits=True, **kw)
            checks += _sample_checks(f"d={d} N={n}", out, ref)
            checks.append(Check(f"d={d} N={n} KV tokens per layer",
                                _mismatches([torch.tensor(out.kv_tokens_per_layer)],
                                            [torch.tensor(ref["kv_tokens_per_layer"])]), 0))
        if lean is not None:
            checks += _sample_checks(f"lean d={d} N={n}", lean.generate(label, subnet, record_logits=True, **kw), ref)
            if var.blocks[0].attn.mat_qkv.weight.is_cuda:   # the replayed graph, as sampling runs it
                lean.cuda_graphs = True
                out = lean.generate(label, subnet, **kw)
                lean.cuda_graphs = False
                lean.release()
                checks.append(Check(f"lean d={d} N={n} tokens, CUDA graph", _mismatches(out.tokens, ref["tokens"]), 0))
    return checks


def _sample_checks(tag: str, out, ref) -> list[Check]:
    return [Check(f"{tag} sampled tokens", _mismatches(out.tokens, ref["tokens"]), 0),
            Check(f"{tag} guided logits", _max_abs(out.cfg_logits, ref["cfg_logits"]), FLOAT_TOL),
            Check(f"{tag} f_hat", _max_abs(out.f_hat, ref["f_hat"]), FLOAT_TOL),
            Check(f"{tag} image", _max_abs(out.images, ref["img"]), FLOAT_TOL)]


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  {'max error':>10}  {'tolerance':>9}  result"]
    for c in checks:
        tol = "exact" if c.tolerance == 0 else f"{c.tolerance:.0e}"
        lines.append(f"{c.name:<{width}}  {c.max_error:>10.3g}  {tol:>9}  {'ok' if c.ok else 'FAIL'}")
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)


def add_parser(sub):
    p = sub.add_parser("verify-golden", help="compare this installation with the reference's golden vectors")
    p.add_argument("directory", help="a directory with config.json, vae.pth, var.pth, vectors.pth")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--sampler", nargs="+", choices=SAMPLERS, default=list(SAMPLERS),
                   help="samplers to check (default: both)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    checks = verify_golden(args.directory, device=args.device, samplers=args.sampler)
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1
