"""The `variant` command: one subcommand per pipeline stage, each callable by hand.

Snakemake rules only call these, so every stage can be run and tested on its own.
Errors that a user can fix (a bad file, key or value) print one line naming it and
exit with status 2; a check that ran and failed exits with status 1.
"""
from __future__ import annotations

import argparse
import sys


def cmd_verify_golden(args) -> int:
    from .golden import format_checks, verify_golden
    checks = verify_golden(args.directory, device=args.device)
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1


def cmd_cost(args) -> int:
    from .costmodel import VARShape, flops, kv_cache_mib, parameter_count, subnet_of
    shape = VARShape.from_depth(args.depth)
    print(f"VAR-d{args.depth}: {parameter_count(shape) / 1e9:.3f}B parameters, batch {args.batch} (x2 for CFG)")
    print(f"{'config':<12} {'KV ref MiB':>11} {'KV lean MiB':>12} {'TFLOP':>8}")
    depths = args.subnet_depth or [args.depth]
    for d in depths:
        for n in (args.bridge or [6]) if d != args.depth else [shape.num_scales]:
            sub = subnet_of(shape, d, n)
            name = f"d{d}" + (f" N={n}" if d != args.depth else "")
            print(f"{name:<12} {kv_cache_mib(shape, d, n, args.batch):>11.1f} "
                  f"{kv_cache_mib(shape, d, n, args.batch, 'lean'):>12.1f} "
                  f"{flops(shape, sub, args.batch)['total'] / 1e12:>8.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="variant", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("verify-golden", help="compare this installation with the reference's golden vectors")
    s.add_argument("directory", help="a directory with config.json, vae.pth, var.pth, vectors.pth")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_verify_golden)

    s = sub.add_parser("cost", help="analytic KV cache, parameters and FLOPs of sampling")
    s.add_argument("--depth", type=int, default=30)
    s.add_argument("--subnet-depth", type=int, nargs="*", default=[30, 16, 8, 4, 2])
    s.add_argument("--bridge", type=int, nargs="*", default=[6])
    s.add_argument("--batch", type=int, default=64)
    s.set_defaults(func=cmd_cost)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .supernet import SubnetError
    try:
        return args.func(args)
    except (CheckpointError, SubnetError, FileNotFoundError) as e:
        print(f"variant {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
