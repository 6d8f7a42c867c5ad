"""Benchmarks and ablations: each module adds one `variant bench <name>` subcommand.

`variant.cli.COMMANDS["bench"]` lists the modules; each calls `subcommand(sub, name, help)`
from its `add_parser`, so the `bench` group is created once, here.
"""
from __future__ import annotations

import argparse


def subcommand(sub, name: str, help: str) -> argparse.ArgumentParser:
    """The parser of `variant bench NAME` (the `bench` group is made by the first caller)."""
    if "bench" not in sub.choices:
        sub.add_parser("bench", help="benchmarks and ablations (rows to parquet; see benchmarks/README.md)"
                       ).add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    group = next(a for a in sub.choices["bench"]._actions if isinstance(a, argparse._SubParsersAction))
    return group.add_parser(name, help=help, description=help)


def params_options(p: argparse.ArgumentParser, device: bool = True) -> None:
    """--profile/--params (the benchmark's defaults come from params.yaml) and --device."""
    p.add_argument("--profile", default=None, help="params.yaml profile (default: its `profile` key)")
    p.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the profile's `device`)")
