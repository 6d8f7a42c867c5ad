"""The paper's tables from one profile's results: each a `Table` of cells by (row, column),
with the paper id of every cell the paper also prints (the paper check compares them), and
its Markdown and LaTeX text.

Choices, stated once:
- Tables 2 and 3 use one profiling mode (`mode`, default `reference`: the reference sampler's
  KV accounting, which reproduces the paper's VAR-d30 KV cache of 28687 MB). Table 2 is
  measured at the profile's first profiling batch (the paper's 64).
- Table 2's DiT-XL/2, LlamaGen-XXL and VAR-CoDe rows are the paper's printed cells, marked
  "copied from the paper" in the Source column; #Param is the cost model's count.
- Table 8's full-depth row is the full network of `Results.full_run`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from variant import dag, names
from variant.config import phases_of
from variant.costmodel import parameter_count
from variant.report.paper import paper_table
from variant.report.results import Results, get, missing, var_shape

COPIED = "copied from the paper"


@dataclass
class Table:
    """A table's cells by (row key, column), and which of them the paper also prints."""

    name: str
    title: str
    columns: list[str]
    formats: dict[str, Callable] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cells: dict = field(default_factory=dict)
    keys: list = field(default_factory=list)
    measured: list[dict] = field(default_factory=list)  # paper_id, value, source row

    def put(self, key, column, value, source=None, paper_id=None):
        if key not in self.keys:
            self.keys.append(key)
        self.cells[(key, column)] = value
        if paper_id:
            self.measured.append(dict(paper_id=paper_id, value=value, source=source))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([[self.cells.get((k, c)) for c in self.columns] for k in self.keys],
                            columns=self.columns)

    def text(self) -> pd.DataFrame:
        """Cells as printed: numbers formatted per column, a missing value empty."""
        def show(column, v):
            if missing(v):
                return ""
            return self.formats[column](v) if column in self.formats and not isinstance(v, str) else str(v)
        return pd.DataFrame([[show(c, self.cells.get((k, c))) for c in self.columns] for k in self.keys],
                            columns=self.columns)


def _fmt(spec: str) -> Callable:
    return lambda v: format(v, spec)


def _mib(v: float) -> str:
    """Whole MiB as the paper prints them; tenths for the tiny profile's few-MiB caches."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _count(v: float) -> str:
    return f"{v / 1e9:.1f}B" if v >= 1e9 else f"{v / 1e6:.3g}M"


FID = _fmt(".2f")
NOTE_EMPTY = "An empty cell: that configuration was not run (no row in the results)."


def _scales(scales) -> str:
    """1-based scales as the paper prints them: [1,2,3,7,8] -> 'r1-r3, r7-r8'."""
    runs = []
    for k in sorted(scales):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"r{a}" if a == b else f"r{a}-r{b}" for a, b in runs) or "None"


def table1(r: Results) -> Table:
    D, K, d = r.D, r.K, r.cfg["sample"]["table1_depth"]
    t = Table("table1", f"Table 1. The training-free d={d} subnet on early, middle or late scales "
              f"(run `pretrained`, D={D}).", ["Strategy", f"d={D} scales", f"d={d} scales", "Final FID"],
              {"Final FID": FID}, [NOTE_EMPTY])
    strategies = [("Full depth", "full-depth", names.FULL, [])]
    for (name, slug), config in zip([("Early subnet", "early-subnet"), ("Mid subnet", "mid-subnet"),
                                     ("Late subnet (Ours)", "late-subnet")], dag.table1_configs(r.cfg)):
        strategies.append((name, slug, config, list(names.parse_config(config).scales)))
    for name, slug, config, subnet in strategies:
        row = r.q(names.PRETRAINED, config)
        t.put(name, "Strategy", name)
        t.put(name, f"d={D} scales", _scales(set(range(1, K + 1)) - set(subnet)))
        t.put(name, f"d={d} scales", _scales(subnet))
        t.put(name, "Final FID", get(row, "fid"), row, f"table1/{slug}/fid")
    return t


def _label(r: Results, d: int) -> str:
    return f"VAR-d{r.D}" if d == r.D else f"VARiant-d{d}"


def _paper_label(r: Results, d: int) -> str:
    """The paper's row for the profile's depth d: the full model is the paper's VAR-d30."""
    return "VAR-d30" if d == r.D else f"VARiant-d{d}"


def table2(r: Results, mode: str = "reference") -> Table:
    batch = r.first_batch
    t = Table("table2", f"Table 2. Efficiency (profiling mode `{mode}`, batch {batch}, VQVAE decoding "
              "excluded) and quality of each depth at the training bridge.",
              ["Method", "#Steps", "Speedup", "Latency", "Mem", "KV Cache", "#Param", "FID", "IS", "Prec",
               "Rec", "Source"],
              {"Speedup": lambda v: f"{v:.1f}×", "Latency": lambda v: f"{v:.2f}s" if v >= 0.1 else f"{v:.2g}s",
               "Mem": lambda v: f"{_mib(v)}MB", "KV Cache": lambda v: f"{_mib(v)}MB", "#Param": _count, "FID": FID,
               "IS": _fmt(".0f"), "Prec": _fmt(".2f"), "Rec": _fmt(".2f")},
              [NOTE_EMPTY, "Mem and KV Cache in MiB (the paper's MB); #Param from the cost model; "
               "Speedup = VAR latency / row latency, both measured here.",
               f"Rows marked '{COPIED}' are the paper's printed cells (its L20 GPU, batch 64)."])
    copied = paper_table("table2").set_index(["row", "column"])
    full = r.p(mode, r.D, None, batch)
    quality = {r.D: r.q(names.PRETRAINED, names.FULL),
               **{d: r.grid(names.progressive(d), d, r.bridge) for d in r.depths}}
    for method in ("DiT-XL/2", "LlamaGen-XXL", r.D, "VAR-CoDe", *sorted(r.depths, reverse=True)):
        if isinstance(method, str):
            for column in t.columns[1:-1]:   # the printed text where it is not one number ("6+4")
                cell = copied.loc[(method, column)]
                printed = cell["unit"] == "n/a" or column in ("#Steps", "#Param")
                t.put(method, column, cell["quote"] if printed else cell["value"])
            t.put(method, "Method", method)
            t.put(method, "Source", COPIED)
            continue
        d, ids = method, f"table2/{_paper_label(r, method)}"
        prof, row = r.p(mode, d, r.bridge, batch), quality[method]
        t.put(d, "Method", _label(r, d))
        t.put(d, "#Steps", f"{r.K}" if d == r.D else f"{r.bridge}+{r.K - r.bridge}")
        speedup = None if prof is None or full is None else full["latency_s"] / prof["latency_s"]
        for column, value, key in [("Speedup", speedup, "speedup_x"),
                                   ("Latency", get(prof, "latency_s"), "latency_s"),
                                   ("Mem", get(prof, "peak_mib"), "mem_mb"),
                                   ("KV Cache", get(prof, "kv_mib"), "kv_mb")]:
            t.put(d, column, "OOM" if prof is not None and prof["oom"] else value, prof, f"{ids}/{key}")
        t.put(d, "#Param", float(parameter_count(var_shape(r.cfg))), "cost model", f"{ids}/params")
        for column, key, paper_key in [("FID", "fid", "fid"), ("IS", "isc_mean", "is"),
                                       ("Prec", "precision", "precision"), ("Rec", "recall", "recall")]:
            t.put(d, column, get(row, key), row, f"{ids}/{paper_key}")
        t.put(d, "Source", "measured")
    return t


def table3(r: Results, mode: str = "reference") -> Table:
    cap = r.cfg["profiling"].get("memory_cap_gib")
    t = Table("table3", f"Table 3. Memory per batch size and depth in MiB (the paper's MB; profiling mode "
              f"`{mode}`{f', memory capped at {cap} GiB' if cap else ''}). OOM: out of memory.",
              ["Batch Size", "Method", "KV Cache", "Params", "Total"],
              {c: _mib for c in ("KV Cache", "Params", "Total")}, [NOTE_EMPTY])
    for batch in r.cfg["profiling"]["batches"]:
        for d in (r.D, *sorted(r.depths, reverse=True)):
            key, prof = (batch, d), r.p(mode, d, r.bridge, batch)
            t.put(key, "Batch Size", batch)
            t.put(key, "Method", _label(r, d))
            for column, col, paper in [("KV Cache", "kv_mib", "kv_mb"), ("Params", "params_mib", "params_mb"),
                                       ("Total", "peak_mib", "total_mb")]:
                value = "OOM" if prof is not None and prof["oom"] else get(prof, col)
                t.put(key, column, value, prof, f"table3/bs{batch}/{_paper_label(r, d)}/{paper}")
    return t


def table4(r: Results) -> Table:
    cols = ["Training-free Subnet", "Training-free Full", "Joint Training Subnet", "Joint Training Full"]
    t = Table("table4", f"Table 4. FID of each subnet depth (N={r.bridge}) before (run `pretrained`) and "
              "after joint training (run `progressive_d{d}`).", ["Subnet Depth", *cols],
              {c: FID for c in cols}, [NOTE_EMPTY])
    for d in r.depths:
        sources = [(r.grid(names.PRETRAINED, d, r.bridge), "tf_subnet_fid"),
                   (r.q(names.PRETRAINED, names.FULL), "tf_full_fid"),
                   (r.grid(names.progressive(d), d, r.bridge), "joint_subnet_fid"),
                   (r.q(names.progressive(d), names.FULL), "joint_full_fid")]
        t.put(d, "Subnet Depth", f"d={d} ({100 * d / r.D:.0f}%)")
        for column, (row, key) in zip(cols, sources):
            t.put(d, column, get(row, "fid"), row, f"table4/d{d}/{key}")
    return t


def table5(r: Results) -> Table:
    """One pair of rows per skip-all depth; the paper has one depth, named in the column
    header. A profile without skip-all runs gets the header alone."""
    depths = r.cfg["train"]["skip_all_depths"]
    several = len(depths) != 1
    sub = "Subnet" if several else f"Subnet (d{depths[0]})"
    cols = [f"{sub} FID", f"{sub} IS", "Full Network FID", "Full Network IS"]
    t = Table("table5", f"Table 5. Bridge-zone ablation: the subnet on every scale (run `skipall_d{{d}}`, "
              f"N=0) vs on r{r.bridge + 1}-r{r.K} (run `progressive_d{{d}}`, N={r.bridge}).",
              ["Design", *cols], {c: FID if c.endswith("FID") else _fmt(".0f") for c in cols}, [NOTE_EMPTY])
    for d in depths:
        for design, run, subnet in [(f"skip r1-r{r.K}", names.skip_all(d), names.zones(d, 0)),
                                    (f"skip r{r.bridge + 1}-r{r.K}", names.progressive(d),
                                     names.grid_config(d, r.bridge, r.K))]:
            key, slug = (d, design), design.replace(" ", "-")
            t.put(key, "Design", f"{design}, d={d}" if several else design)
            for column, row, col, paper in [(cols[0], r.q(run, subnet), "fid", "subnet_fid"),
                                            (cols[1], r.q(run, subnet), "isc_mean", "subnet_is"),
                                            (cols[2], r.q(run, names.FULL), "fid", "full_fid"),
                                            (cols[3], r.q(run, names.FULL), "isc_mean", "full_is")]:
                t.put(key, column, get(row, col), row, None if several else f"table5/{slug}/{paper}")
    return t


def table7(r: Results) -> Table:
    cols = {"Phase 1": "phase1", "Phase 2": "phase2", "Phase 3": "phase3", "Total": "total"}
    t = Table("table7", "Table 7. Training phase lengths in epochs (params.yaml, train.phases).",
              ["Depth", *cols], {c: _fmt(".0f") for c in cols})
    for d in sorted(r.depths, reverse=True):
        phases = phases_of(r.cfg, d)
        t.put(d, "Depth", f"d={d}")
        for (column, key), value in zip(cols.items(), (*phases, sum(phases))):
            t.put(d, column, value, "params.yaml", f"table7/d{d}/{key}_epochs")
    return t


def table8(r: Results) -> Table:
    bridges = r.cfg["sample"]["bridges"]
    t = Table("table8", f"Table 8. FID over the (d, N) configuration space (runs `progressive_d{{d}}`; "
              f"the d={r.D} row is the full network of `{r.full_run}`).",
              ["d", *(f"N={n}" for n in bridges)], {f"N={n}": FID for n in bridges}, [NOTE_EMPTY])
    for d in (*r.depths, r.D):
        t.put(d, "d", f"d={d}")
        paper_d = 30 if d == r.D else d
        for n in bridges:
            row = r.q(r.full_run, names.FULL) if d == r.D else r.grid(names.progressive(d), d, n)
            t.put(d, f"N={n}", get(row, "fid"), row, f"table8/d{paper_d}/N{n}")
    return t


# Tables 2 and 3 take the profiling mode; the others read no profiling rows.
TABLE_MAKERS = {"table1": lambda r, mode: table1(r), "table2": table2, "table3": table3,
                "table4": lambda r, mode: table4(r), "table5": lambda r, mode: table5(r),
                "table7": lambda r, mode: table7(r), "table8": lambda r, mode: table8(r)}
TABLES = tuple(TABLE_MAKERS)


def build_tables(r: Results, mode: str = "reference", only: str | None = None) -> dict[str, Table]:
    """Every table (or only the one named), by name."""
    return {name: make(r, mode) for name, make in TABLE_MAKERS.items() if only in (None, name)}


# ---- text ----------------------------------------------------------------------------------------




def to_markdown(t: Table) -> str:
    text = t.text()
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"**{t.title}**", "", "| " + " | ".join(map(cell, t.columns)) + " |",
             "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines + [""] + [f"- {n}" for n in t.notes]) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "×": r"$\times$", "–": "--"}


def _tex(s) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(t: Table) -> str:
    text = t.text()
    rows = [" & ".join(map(_tex, row)) + r" \\" for row in text.itertuples(index=False)]
    return "\n".join([
        f"% {t.name}: generated by `variant report`; edit the pipeline, not this file.",
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(t.title)}}}",
        rf"\begin{{tabular}}{{l{'r' * (len(t.columns) - 1)}}}", r"\toprule",
        " & ".join(map(_tex, t.columns)) + r" \\", r"\midrule", *rows, r"\bottomrule", r"\end{tabular}",
        *(rf"\par\footnotesize {_tex(n)}" for n in t.notes), r"\end{table}", ""])


