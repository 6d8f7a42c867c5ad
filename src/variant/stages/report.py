"""`variant report`: the paper's tables and figures from one profile's results, and the
reviewer's paper check that holds every number the profile can measure against the paper.

The work is in `variant.report` (results, tables, figures, check, outputs); this module reads
the input files and names the output directories. One item (`--only`) reads only what
`variant.dag.REPORT_ITEMS` says it reads: an input it does not use is never opened.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from variant import dag
from variant.config import load_params
from variant.options import params_options

PAPER_CHECK_READS = ("quality", "profiling")   # it compares the tables' values


def reads(cfg: dict, only: str | None) -> set[str]:
    """The inputs an item reads (everything for the whole report): quality rows (when the
    DAG gives it metric rows), profiling rows, training logs, checkpoints."""
    if only is None:
        return {"quality", "profiling", "logs", "checkpoints"}
    if only == "paper_check":
        return set(PAPER_CHECK_READS)
    _, extra = dag.REPORT_ITEMS[only]
    return set(extra) | ({"quality"} if dag.report_runs(cfg, only) else set())


def _concat(files: list[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def load_inputs(args, cfg: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(quality, profiling, logs) as the command line names them; an input the item does not
    read is an empty frame, a default file is opened only when the item reads it."""
    from variant.report.results import PROFILING_COLUMNS, QUALITY_COLUMNS
    needed = reads(cfg, args.only)
    if args.metrics:
        quality = _concat(args.metrics)
    elif args.quality or "quality" in needed:
        quality = pd.read_parquet(args.quality or dag.quality(cfg))
    else:
        quality = pd.DataFrame(columns=QUALITY_COLUMNS)
    if args.profiling:
        profiling = _concat(args.profiling)
    elif args.profiling is None and "profiling" in needed:
        profiling = pd.read_parquet(dag.profiling(cfg))
    else:
        profiling = pd.DataFrame(columns=PROFILING_COLUMNS)
    return quality, profiling, _concat(args.training_logs) if args.training_logs else None


def add_parser(sub):
    p = sub.add_parser("report")   # its one-line help: variant.cli.COMMANDS
    params_options(p)
    p.add_argument("--only", help="one table or figure of variant.dag.REPORT_ITEMS, or paper_check "
                                  "(default: everything)")
    p.add_argument("--quality", help="the quality rows (default: results/P/quality.parquet, read only if used)")
    p.add_argument("--metrics", nargs="*", default=[], help="per-configuration metric rows, instead of --quality")
    p.add_argument("--profiling", nargs="*", default=None,
                   help="profiling rows (default: results/P/profiling.parquet, read only if used; "
                        "the flag alone: none)")
    p.add_argument("--training-logs", nargs="*", default=[], help="results/P/train/{run}.parquet files")
    p.add_argument("--checkpoints", nargs="*", default=[],
                   help="Figure 7: the VAR checkpoints at each phase end, in variant.dag.fig7_runs order")
    p.add_argument("--vae", help="Figure 7: the VQVAE")
    p.add_argument("--tables-dir", help="where tables go (default: results/P/tables)")
    p.add_argument("--figures-dir", help="where figures (PDF, PNG, and the CSV they plot) go (default: results/P/figures)")
    p.add_argument("--report-dir", help="where paper_check.md/.html go (default: results/P)")
    p.add_argument("--efficiency-mode", default="reference",
                   help="profiling mode of Tables 2 and 3 (default: reference, the paper's accounting)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from variant.report.figures import FIGURES
    from variant.report.outputs import check_item, write_report
    from variant.report.results import Results
    from variant.report.tables import TABLES
    cfg = load_params(args.params, args.profile)
    check_item(args.only)
    r = Results.from_frames(cfg, *load_inputs(args, cfg))
    r.checkpoints, r.vae = args.checkpoints, args.vae
    if args.efficiency_mode not in set(r.profiling.get("mode", [])) | {"reference"}:
        raise ValueError(f"--efficiency-mode {args.efficiency_mode!r}: no profiling rows in that mode")
    report_dir = Path(args.report_dir or dag.results_dir(cfg))
    sections = write_report(r, args.tables_dir or dag.tables_dir(cfg), args.figures_dir or dag.figures_dir(cfg),
                            report_dir, args.efficiency_mode, only=args.only)
    if not sections:
        print(f"variant report: wrote {args.only}")
        return 0
    status = sections[0].frame["status"].value_counts().to_dict()
    print(f"variant report: {len(TABLES)} tables, {len(FIGURES)} figures, paper check "
          f"{status or 'empty'} -> {report_dir / 'paper_check.md'}")
    return 0
