"""Benchmarks and ablations: each module adds one `variant bench <name>` subcommand.

`variant.cli.COMMANDS` lists every benchmark with its module and one-line help; a module's
`add_parser(sub)` calls `subcommand(sub, name)` and adds its options. The `bench` group is
made once, here, by whichever comes first. This module imports only argparse, so listing
the benchmarks costs nothing.
"""
from __future__ import annotations

import argparse

GROUP = "bench"
GROUP_HELP = "benchmarks and ablations (rows to parquet; see benchmarks/README.md)"


def group(sub) -> argparse._SubParsersAction:
    """The subcommands of `variant bench`, created on the first call."""
    if GROUP not in sub.choices:
        sub.add_parser(GROUP, help=GROUP_HELP, description=GROUP_HELP).add_subparsers(
            dest="bench", required=True, metavar="BENCHMARK")
    return next(a for a in sub.choices[GROUP]._actions if isinstance(a, argparse._SubParsersAction))


def subcommand(sub, name: str, help: str | None = None) -> argparse.ArgumentParser:
    """The parser of `variant bench NAME`. `help` is optional: the CLI's table owns the
    one-line help and fills it in where a module gives none."""
    return group(sub).add_parser(name, help=help, description=help)


def model_options(p: argparse.ArgumentParser, depth: int = 30) -> None:
    """The weights a sampling benchmark runs: random ones of --depth, or --var/--vae files."""
    p.add_argument("--depth", type=int, default=depth, help="VAR depth (random weights) unless --var is given")
    p.add_argument("--var", default=None, help="a VAR checkpoint instead of random weights")
    p.add_argument("--vae", default=None, help="its VQVAE checkpoint (with --var)")


def sampling_options(p: argparse.ArgumentParser) -> None:
    """The sampling knobs, at the paper's values (params `sample` holds the same)."""
    p.add_argument("--cfg", type=float, default=1.5, help="classifier-free guidance scale")
    p.add_argument("--top-k", type=int, default=900, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=float, default=0.96, help="nucleus: the smallest set holding this mass")
    p.add_argument("--seed", type=int, default=0, help="seed of the labels, the sampling and random weights")
