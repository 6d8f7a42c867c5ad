"""Command-line options shared by stages and benchmarks. Imports only argparse: building
a parser must stay as cheap as `variant --help`."""
from __future__ import annotations

import argparse


def params_options(p: argparse.ArgumentParser, reads: str | None = None, device: bool = False) -> None:
    """--profile and --params (every default comes from params.yaml); `reads` says which
    section of the file the command takes its knobs from. `device` adds --device."""
    p.add_argument("--profile", default=None, help="params.yaml profile (default: its `profile` key)")
    p.add_argument("--params", default="params.yaml",
                   help=f"the params file; {reads}" if reads else "the params file (default: params.yaml)")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the profile's `device`)")
