"""The `variant` command: one subcommand per pipeline stage, each callable by hand.

Snakemake rules only call these, so every stage can be run and tested on its own.
Errors that a user can fix (a bad file, key or value) print one line naming it and
exit with status 2; a check that ran and failed exits with status 1.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str   # under `variant.`: its add_parser(subparsers) adds the command's parser
    help: str     # the one-line help `variant --help` lists


# The one table of commands. A run imports only its command's module: torch, torch-fidelity
# and matplotlib cost seconds, and the pipeline starts `variant` once per job; `variant
# --help` imports none. "bench NAME" entries are the subcommands of `variant bench`.
COMMANDS = {
    "verify-golden": Command("golden", "compare this installation with the reference's golden vectors"),
    "cost": Command("costmodel", "analytic KV cache, parameters and FLOPs of sampling"),
    "make-data": Command("stages.fetch", "generate the tiny profile's synthetic train/eval images"),
    "fetch": Command("stages.fetch", "download the released VAR/VQVAE (paper) or pre-train tiny ones"),
    "check-base": Command("stages.fetch", "synthetic profiles: is the pre-trained base the one the committed "
                                          "rows were made on (results/P/fetch.json)?"),
    "train-extractor": Command("stages.fetch", "train the tiny profile's FID feature network"),
    "tokenize": Command("stages.tokenize", "tokenise the training set once (token shards + index.json)"),
    "train": Command("stages.train", "progressive supernet training (Algorithm 1) and baselines"),
    "sample": Command("stages.sample", "generate per_class images of every class for one configuration"),
    "grid": Command("report.grids", "a figure of sample images, one row per configuration"),
    "reference-stats": Command("stages.reference", "features and FID statistics of the evaluation set, once"),
    "evaluate": Command("stages.evaluate", "FID/IS/precision/recall of one configuration's samples"),
    "collect": Command("stages.evaluate", "gather per-configuration metric rows into one parquet"),
    "profile": Command("stages.profile", "latency, memory and KV cache of sampling, as params `profiling` asks"),
    "report": Command("stages.report", "the paper's tables and figures, and the reviewer's paper check"),
    "findings": Command("stages.findings", "judge the paper's claims on a profile's quality rows"),
    "stand-ins": Command("standins", "random-weight files of the released shapes, an ImageNet-layout folder, "
                                     "a reference batch: to rehearse a profile"),
    "resources": Command("util.resources", "one parquet of what each command cost, from VARIANT_RESOURCE_LOG"),
    "dvc-yaml": Command("dvcgen", "write dvc.yaml from the pipeline's DAG (or --check it)"),
    "bench sample": Command("bench.sample", "latency / memory / KV cache of sampling, one parquet row each"),
    "bench precision": Command("bench.precision",
                               "total-variation distance of each sampler's next-token distribution to float32"),
    "bench tokenize": Command("bench.tokenize", "time a training step from tokens vs. from images"),
    "bench train": Command("bench.train", "training throughput of a random VAR on random tokens"),
}


def command_of(argv) -> str | None:
    """The COMMANDS key `argv` runs ("sample", "bench precision"), or None."""
    name = " ".join(argv[:2]) if argv[:1] == ["bench"] else (argv[0] if argv else None)
    return name if name in COMMANDS else None


def build_parser(argv=(), every_module: bool = False) -> argparse.ArgumentParser:
    """The parser of `argv`'s command, from its module; every other command is listed by
    name and help only. every_module: each command's real parser (tests, docs)."""
    from variant import __version__
    from variant import bench
    p = argparse.ArgumentParser(prog="variant", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"variant {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = set(COMMANDS) if every_module else {command_of(list(argv))} - {None}
    for module in dict.fromkeys(COMMANDS[name].module for name in chosen):
        importlib.import_module(f"variant.{module}").add_parser(sub)
    for name, command in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        where = bench.group(sub) if group else sub
        if leaf not in where.choices:   # listed, not loaded
            where.add_parser(leaf, help=command.help, description=command.help)
        elif where.choices[leaf].description is None:
            where.choices[leaf].description = command.help
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


def error_line(e: Exception) -> str:
    """One line for a user: a file the OS did not find is `FILE: no such file` (the stages
    add what the file is for, variant.util.files.require_file)."""
    if isinstance(e, FileNotFoundError) and e.filename is not None:
        return f"{e.filename}: no such file"
    return str(e)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    from variant.util.resources import Recorder
    recorder = Recorder()
    args, rc = None, 1   # an exception that escapes below is a crash: recorded as such
    try:
        try:
            args = build_parser(argv).parse_args(argv)
        except SystemExit as e:   # a usage error (2) or --help (0): recorded too
            rc = e.code if isinstance(e.code, int) else 2
            raise
        from variant.config import reading_for
        with reading_for(args.command):   # a stage sees only the params keys dag.STAGE_PARAMS declares
            check_device(args)
            rc = args.func(args)
            return rc
    except (FileNotFoundError, ValueError) as e:   # CheckpointError, ParamsError ... are ValueErrors
        print(f"variant {args.command}: error: {error_line(e)}", file=sys.stderr)
        rc = 2
        return rc
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"variant {args.command}: error: no space left on the device writing {e.filename}; "
              "what was written before is kept: free space and rerun", file=sys.stderr)
        rc = 1
        return rc
    except KeyboardInterrupt:   # Ctrl-C, or SIGINT from `timeout` or Snakemake stopping its jobs
        print(f"variant {getattr(args, 'command', '')}: interrupted; the files it finished are kept "
              "(every write is atomic) and a rerun carries on from them", file=sys.stderr)
        rc = 130
        return rc
    finally:
        recorder.finish(command_of(argv) or getattr(args, "command", None) or " ".join(argv[:1]),
                        args, argv, rc or 0)


if __name__ == "__main__":
    sys.exit(main())
