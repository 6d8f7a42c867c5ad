"""Writing the report's files: each table as CSV + Markdown + LaTeX, each figure as PDF + PNG,
the paper check as Markdown + HTML. The directories are the caller's (the CLI's arguments)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from variant.report.check import Section, paper_check, render_html, render_markdown
from variant.report.figures import FIGURE_MAKERS, plotted_frame
from variant.report.results import Results
from variant.report.tables import TABLES, Table, build_tables, to_latex, to_markdown
from variant.util.atomic import save_figure, write_csv, write_text

PAPER_CHECK = "paper_check"
ITEMS = (*TABLES, *FIGURE_MAKERS, PAPER_CHECK)


def check_item(only: str | None) -> None:
    """`only` names a table, a figure or the paper check (None: everything)."""
    if only is not None and only not in ITEMS:
        raise ValueError(f"--only {only!r}: not one of {', '.join(sorted(ITEMS))}")


def write_table(t: Table, directory: Path) -> list[Path]:
    directory = Path(directory)
    out = [directory / f"{t.name}.{ext}" for ext in ("csv", "md", "tex")]
    write_csv(t.frame(), out[0])
    write_text(out[1], to_markdown(t))
    write_text(out[2], to_latex(t))
    return out


def write_figure(fig, path) -> list[Path]:
    """`path`.pdf and `path`.png (a .pdf or .png suffix of `path` is dropped)."""
    import matplotlib.pyplot as plt
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".pdf", ".png") else base
    base.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    out = [base.parent / f"{base.name}.pdf", base.parent / f"{base.name}.png"]
    save_figure(fig, out[0])
    save_figure(fig, out[1], dpi=200)
    plt.close(fig)
    return out


def write_figures(r: Results, directory, only: str | None = None) -> list[Path]:
    """Each figure (or only the one named) as PDF + PNG, and the data it plots as CSV."""
    out = []
    for name, (data_of, draw) in FIGURE_MAKERS.items():
        if only not in (None, name):
            continue
        data = data_of(r)
        out += write_figure(draw(data), Path(directory) / name)
        frame = plotted_frame(name, data)
        if frame is not None:
            out.append(Path(directory) / f"{name}.csv")
            write_csv(frame, out[-1])
    return out


def write_paper_check(r: Results, directory, findings: pd.DataFrame | None = None,
                      tables: dict[str, Table] | None = None) -> list[Section]:
    """paper_check.md and .html. It compares the `reference` mode's tables (built here unless
    given) and, by default, the paper's own consistency checks."""
    from variant.report.paper import check_paper
    sections = paper_check(r, tables or build_tables(r, "reference"), check_paper() if findings is None else findings)
    title = f"Paper check: profile `{r.cfg['profile']}` (config_hash {r.cfg['config_hash']})"
    write_text(Path(directory) / "paper_check.md", render_markdown(title, sections))
    write_text(Path(directory) / "paper_check.html", render_html(title, sections))
    return sections


def write_report(r: Results, tables_dir, figures_dir, report_dir, mode: str = "reference",
                 findings: pd.DataFrame | None = None, only: str | None = None) -> list[Section]:
    """Write every table, figure and the paper check (or only the one named); return the
    check's sections (empty when `only` names a table or figure)."""
    check_item(only)
    tables = build_tables(r, mode, only) if only is None or only in TABLES else {}
    for t in tables.values():
        write_table(t, tables_dir)
    if only is None or only in FIGURE_MAKERS:
        write_figures(r, figures_dir, only)
    if only not in (None, PAPER_CHECK):
        return []
    return write_paper_check(r, report_dir, findings, tables if mode == "reference" and only is None else None)
