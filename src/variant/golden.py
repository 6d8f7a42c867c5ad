"""Check an installation against golden vectors of the reference implementation.

A golden directory holds config.json, vae.pth, var.pth and vectors.pth (the layout of
shared/golden/*/). Every comparison the reference's tolerances allow is run and
reported with its maximum error: tokens exactly, floats within 1e-4 (float32).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, build_vae, build_var, read_state_dict, var_config
from .sampler import generate

FLOAT_TOL = 1e-4


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
    vectors = torch.load(directory / "vectors.pth", map_location="cpu", weights_only=False)
    return config, read_state_dict(directory / "var.pth"), read_state_dict(directory / "vae.pth"), vectors


@torch.no_grad()
def verify_golden(directory: str | Path, device: str = "cpu") -> list[Check]:
    config, var_sd, vae_sd, vec = load_golden(directory)
    build = config["build"]
    # TF32 would cost ~1e-3 of precision; the tolerances are for true float32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
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

    for d, n in config["subnets"]:
        ref = vec["infer"][f"d{d}_N{n}"]
        out = generate(var, vae, label, var.subnet(d, n), cfg=config["cfg"], top_k=1, record_logits=True)
        tag = f"d={d} N={n}"
        checks += [
            Check(f"{tag} sampled tokens", _mismatches(out.tokens, ref["tokens"]), 0),
            Check(f"{tag} guided logits", _max_abs(out.cfg_logits, ref["cfg_logits"]), FLOAT_TOL),
            Check(f"{tag} f_hat", _max_abs(out.f_hat, ref["f_hat"]), FLOAT_TOL),
            Check(f"{tag} image", _max_abs(out.images, ref["img"]), FLOAT_TOL),
            Check(f"{tag} KV tokens per layer",
                  _mismatches([torch.tensor(out.kv_tokens_per_layer)], [torch.tensor(ref["kv_tokens_per_layer"])]), 0),
        ]
    return checks


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
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_main)


def _main(args) -> int:
    checks = verify_golden(args.directory, device=args.device)
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1
