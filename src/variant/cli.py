"""The `variant` command: one subcommand per pipeline stage, each callable by hand.

Snakemake rules only call these, so every stage can be run and tested on its own.
Errors that a user can fix (a bad file, key or value) print one line naming it and
exit with status 2; a check that ran and failed exits with status 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Each stage module defines add_parser(subparsers) for its own subcommand(s). A run
# imports only the module of its command: torch-fidelity and matplotlib cost seconds,
# and the pipeline starts `variant` once per job.
COMMANDS = {
    "verify-golden": ["golden"], "cost": ["costmodel"],
    "make-data": ["stages.fetch"], "fetch": ["stages.fetch"], "train-extractor": ["stages.fetch"],
    "tokenize": ["stages.tokenize"], "train": ["stages.train"],
    "bench": ["stages.profile", "stages.tokenize", "stages.train", "bench.precision"],
    "sample": ["stages.sample"], "grid": ["stages.sample"], "reference-stats": ["stages.reference"],
    "evaluate": ["stages.evaluate"], "collect": ["stages.evaluate"],
    "profile": ["stages.profile"], "report": ["stages.report"], "findings": ["stages.findings"],
    "dvc-yaml": ["dvcgen"],
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    from variant import __version__
    p = argparse.ArgumentParser(prog="variant", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"variant {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    modules = [] if command == "--version" else (
        COMMANDS.get(command) or dict.fromkeys(m for ms in COMMANDS.values() for m in ms))
    for name in modules:
        importlib.import_module(f"variant.{name}").add_parser(sub)
    return p


def check_device(args) -> None:
    """A stage that runs on a device (it has --device) and asks for CUDA on a machine without
    one stops here, before any work, naming --device or the params key `device`."""
    if not hasattr(args, "device"):
        return
    from variant.config import check_device, load_params
    if args.device:
        check_device(args.device, "--device")
    elif hasattr(args, "params"):
        cfg = load_params(args.params, getattr(args, "profile", None))
        check_device(cfg["device"], f"{args.params}: profiles.{cfg['profile']}.device")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    from variant.models.checkpoint import CheckpointError
    from variant.models.supernet import SubnetError
    try:
        check_device(args)
        return args.func(args)
    except (CheckpointError, SubnetError, FileNotFoundError, ValueError) as e:
        print(f"variant {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
