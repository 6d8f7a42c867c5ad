"""The `variant` command: one subcommand per pipeline stage, each callable by hand.

Snakemake rules only call these, so every stage can be run and tested on its own.
Errors that a user can fix (a bad file, key or value) print one line naming it and
exit with status 2; a check that ran and failed exits with status 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Each stage module defines add_parser(subparsers) for its own subcommand(s).
STAGE_MODULES = ["golden", "costmodel", "fetch", "profiling", "sample", "evaluate", "dvcgen", "tokenize", "train", "report"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="variant", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(f"variant.{name}").add_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .supernet import SubnetError
    try:
        return args.func(args)
    except (CheckpointError, SubnetError, FileNotFoundError, ValueError) as e:
        print(f"variant {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
