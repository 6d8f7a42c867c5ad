"""The reviewer's paper check: every number the profile can measure against the paper's,
the analytic KV checks, and the paper's disagreements with itself; as Markdown and HTML.

Tolerances (`TOLERANCES`): values are compared only when the profile builds the paper's model
(VAR-d30, the paper's scales, 1000 classes); any other profile (tiny) compares structure only
and marks each value "n/a (<profile> profile)". The analytic KV checks (cost model vs the
paper's KV columns, and vs every profiled KV cache) run in every profile. The check always
reads the tables in the `reference` profiling mode.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from variant import dag
from variant.costmodel import ACCOUNTINGS, VARShape, kv_cache_mib
from variant.report.figures import pareto_points, ratio_epochs
from variant.report.paper import load_paper_numbers, paper_value
from variant.report.results import Results, missing, var_shape
from variant.report.tables import Table

NOT_RUN = "not run"


@dataclass(frozen=True)
class Tolerance:
    """Allowed |measured - paper|: the larger of `absolute` and `relative` x |paper|."""

    rule: str
    absolute: float = 0.0
    relative: float = 0.0

    def allowed(self, paper: float) -> float:
        return max(self.absolute, self.relative * abs(paper))


# By the paper number's unit; a KV cache (id ending in kv_mb) is tighter than other memory,
# because it follows from the architecture alone.
TOLERANCES = {
    "FID": Tolerance("FID: +-0.1 or 5%, the larger", 0.1, 0.05),
    "IS": Tolerance("IS: 5%", relative=0.05),
    "fraction": Tolerance("precision/recall: +-0.02", 0.02),
    "x": Tolerance("latency ratio: 10%", relative=0.10),
    "kv": Tolerance("KV cache: 0.5%", relative=0.005),
    "MB": Tolerance("memory: 5% (allocator and workspace differ by GPU)", relative=0.05),
    "params": Tolerance("#Param: +-0.05B (printed to 0.1B)", 0.05e9),
    "epochs": Tolerance("epochs: exact"),
}
NOT_COMPARED = {"s": "latency in seconds: not compared (the paper's L20 vs this GPU); see Speedup"}


def _tolerance(paper_id: str, unit: str) -> Tolerance | None:
    return TOLERANCES["kv"] if paper_id.endswith("kv_mb") else TOLERANCES.get(unit)


def comparable(cfg: dict) -> bool:
    """Values are compared only when the profile builds the paper's model."""
    return var_shape(cfg) == VARShape.from_depth(30)


PROVENANCE = ["source", "config_hash", "git_commit", "checkpoint"]


def _provenance(source) -> dict:
    """Where a value comes from: a quality or profiling row, or (a string) params.yaml or the cost model."""
    if source is None or isinstance(source, str):
        return dict(source=source or "", config_hash="", git_commit="", checkpoint="")
    if isinstance(source.name, tuple):   # a quality row, indexed by (run, config)
        where = "/".join(source.name)
    else:
        where = (f"profiling {source['mode']} d={int(source['subnet_depth'])} N={int(source['bridge'])} "
                 f"batch={int(source['batch'])}")
    get = lambda k: str(source.get(k, "") or "")  # noqa: E731
    return dict(source=where, config_hash=get("config_hash"), git_commit=get("git_commit")[:12],
                checkpoint=get("checkpoint_sha256")[:12])


def _judge(paper: pd.Series, measured, profile: str, is_comparable: bool) -> dict:
    """Deviation, tolerance and status of one measured value against one paper number."""
    out = dict(deviation="", tolerance="", status="")
    if missing(measured):
        return out | dict(status=NOT_RUN)
    if not is_comparable:
        return out | dict(tolerance=f"n/a ({profile} profile)", status=f"n/a ({profile} profile)")
    if paper["unit"] == "OOM" or measured == "OOM":
        return out | dict(tolerance="both OOM", status="PASS" if paper["unit"] == measured == "OOM" else "FAIL")
    tol = _tolerance(paper["id"], paper["unit"])
    if tol is None:
        return out | dict(tolerance=NOT_COMPARED.get(paper["unit"], "not compared"), status="info")
    dev, allowed = float(measured) - paper["value"], tol.allowed(paper["value"])
    return dict(deviation=f"{dev:+.4g}", tolerance=f"±{allowed:.4g} ({tol.rule})",
                status="PASS" if abs(dev) <= allowed + 1e-12 else "FAIL")


def _show(v) -> str:
    if missing(v):
        return ""
    return v if isinstance(v, str) else f"{float(v):.6g}"


def measured_vs_paper(r: Results, tables: dict[str, Table]) -> pd.DataFrame:
    """(a) Every paper number the profile has a place for, with the measured value."""
    numbers = load_paper_numbers().set_index("id", drop=False)
    is_comparable, rows = comparable(r.cfg), []
    measured = [m for t in tables.values() for m in t.measured]
    for _, pt in pareto_points(r).query("kind == 'fixed'").iterrows():
        for what in ("full", "subnet"):
            measured.append(dict(paper_id=f"figure2a/{pt['label']}/{what}_fid", value=pt[f"{what}_fid"],
                                 source=pt[f"{what}_row"]))
    ratios = ratio_epochs(r)   # Figure 2c: the range of full-network FIDs at the early epoch
    early = ratios[ratios["epoch"] == dag.fig2c_epoch(r.cfg)].dropna(subset=["full_fid"])
    for what, pick in (("min", "idxmin"), ("max", "idxmax")):
        at = getattr(early["full_fid"], pick)() if not early.empty else None
        measured.append(dict(paper_id=f"figure2c/epoch5/full_fid_{what}",
                             value=None if at is None else early.loc[at, "full_fid"],
                             source=None if at is None else early.loc[at, "full_row"]))
    for m in measured:
        if m["paper_id"] not in numbers.index:
            continue
        paper = numbers.loc[m["paper_id"]]
        rows.append(dict(paper_id=m["paper_id"], paper=paper["quote"], measured=_show(m["value"]),
                         **_judge(paper, m["value"], r.cfg["profile"], is_comparable), **_provenance(m["source"])))
    return pd.DataFrame(rows, columns=["paper_id", "paper", "measured", "deviation", "tolerance", "status",
                                       *PROVENANCE])


KV_COLUMNS = ["quantity", "value", "cost_model", "cost_model_is", "deviation", "tolerance", "status"]


def _kv_row(what: str, value: float, model: float, model_text: str) -> dict:
    tol = TOLERANCES["kv"]
    dev = value - model
    return dict(quantity=what, value=f"{value:.1f}", cost_model=f"{model:.1f}", cost_model_is=model_text,
                deviation=f"{100 * dev / model:+.2f}%", tolerance=f"±{100 * tol.relative:g}%",
                status="PASS" if abs(dev) <= tol.allowed(model) else "FAIL")


def paper_kv_vs_cost_model() -> pd.DataFrame:
    """(a) Analytic: the paper's KV columns against the cost model of VAR-d30 (reference accounting)."""
    numbers = load_paper_numbers()
    d30, bridge, rows = VARShape.from_depth(30), int(paper_value("table6/bridge-zone/value")), []
    for _, n in numbers[numbers["id"].str.endswith("kv_mb") & (numbers["unit"] == "MB")].iterrows():
        label, batch = n["id"].split("/")[-2], 64
        if n["table"] == "table3":
            batch = int(n["id"].split("/")[1].removeprefix("bs"))
        if label == "VAR-CoDe":   # its peak KV is its refiner, a plain VAR-d16
            model, text = kv_cache_mib(VARShape.from_depth(16), None, None, batch), f"plain VAR-d16, batch {batch}"
        else:
            d = None if label == "VAR-d30" else int(label.removeprefix("VARiant-d"))
            model = kv_cache_mib(d30, d, bridge, batch)
            text = f"VAR-d30, batch {batch}" + ("" if d is None else f", d={d}, N={bridge}")
        rows.append(_kv_row(f"{n['id']} ('{n['quote']}')", n["value"], model, text))
    return pd.DataFrame(rows, columns=KV_COLUMNS)


def profiled_kv_vs_cost_model(r: Results) -> pd.DataFrame:
    """(a) Analytic: every profiled KV cache against the cost model of this profile's VAR, in the
    accounting the profiler recorded (kv_mib_costmodel: its device's dtypes), else the mode's."""
    shape, rows = var_shape(r.cfg), []
    for _, p in r.profiling.iterrows():
        recorded = p.get("kv_mib_costmodel")
        if p["oom"] or missing(p.get("kv_mib")) or (missing(recorded) and p["mode"] not in ACCOUNTINGS):
            continue
        d, full = int(p["subnet_depth"]), int(p["subnet_depth"]) == r.D
        n = None if full else int(p["bridge"])
        if missing(recorded):
            model, how = kv_cache_mib(shape, d, n, int(p["batch"]), p["mode"]), f"{p['mode']} accounting"
        else:
            model, how = float(recorded), "the profiler's accounting (kv_mib_costmodel)"
        config = "full" if full else f"d={d}, N={n}"
        rows.append(_kv_row(f"{p['mode']} {config}, batch {int(p['batch'])}", float(p["kv_mib"]), model, how)
                    | _provenance(p))
    return pd.DataFrame(rows, columns=[*KV_COLUMNS, *PROVENANCE])


def paper_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """(b) The checks of the paper against itself that fail, with both places."""
    bad = findings[~findings["ok"]]
    places = bad["places"].str.split(" VS ", n=1, expand=True).reindex(columns=[0, 1])
    return pd.DataFrame({"check": bad["check"], "claimed": bad["claimed"].map(_show),
                         "recomputed": bad["recomputed"].map(_show), "claim (place 1)": places[0],
                         "against (place 2)": places[1], "note": bad["note"]}).reset_index(drop=True)


@dataclass
class Section:
    title: str
    intro: str
    frame: pd.DataFrame


def paper_check(r: Results, tables: dict[str, Table], findings: pd.DataFrame) -> list[Section]:
    a = measured_vs_paper(r, tables)
    counts = a["status"].value_counts().to_dict()
    rules = "; ".join(t.rule for t in TOLERANCES.values()) + "; " + "; ".join(NOT_COMPARED.values())
    scope = ("Values are compared: this profile builds the paper's model." if comparable(r.cfg) else
             f"Profile `{r.cfg['profile']}` does not build the paper's model (VAR-d{r.D}, "
             f"{r.cfg['data']['num_classes']} classes): its values are not comparable with the paper's, so "
             "this section checks structure only (which numbers have a measured counterpart).")
    paper_kv, own_kv = paper_kv_vs_cost_model(), profiled_kv_vs_cost_model(r)
    failed = (~findings["ok"]).sum()
    return [
        Section("(a) Measured numbers vs the paper",
                f"{scope} Tolerances: {rules}. Status counts: "
                + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none")
                + ". Provenance: the row a value comes from (run/config, or the profiling configuration), its "
                "config_hash, and the first 12 hex digits of its git_commit and checkpoint sha256.", a),
        Section("(a) Analytic: the paper's KV cache vs the cost model",
                "Checked in every profile: the cost model's reference accounting (fp32 keys, fp16 values, every "
                f"scale of every layer, CFG doubles the batch) of VAR-d30; tolerance 0.5%. "
                f"{(paper_kv['status'] == 'FAIL').sum()} of {len(paper_kv)} fail.", paper_kv),
        Section("(a) Analytic: profiled KV cache vs the cost model of this profile",
                f"Every profiled (mode, d, N, batch) that did not run out of memory, against the cost model "
                f"of this profile's VAR in the accounting the profiler recorded for its device (else the "
                f"mode's); tolerance 0.5%. "
                f"{(own_kv['status'] == 'FAIL').sum()} of {len(own_kv)} fail.", own_kv),
        Section("(b) The paper against itself",
                f"variant.report.paper.check_paper(): {len(findings) - failed} of {len(findings)} checks agree; the "
                f"{failed} that do not are listed with both places.", paper_findings(findings)),
    ]


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    cell = lambda v: _show(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def render_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}\n"]
    for s in sections:
        parts += [f"## {s.title}\n", s.intro + "\n", _md_table(s.frame)]
    return "\n".join(parts)


def render_html(title: str, sections: list[Section]) -> str:
    """Self-contained: inline CSS, no scripts. Status is spelled out, not shown by colour alone."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;"
             "font-size:85%}td,th{border:1px solid #999;padding:2px 6px;vertical-align:top}"
             "th{background:#eee}.FAIL{background:#fdd;font-weight:bold}.PASS{background:#dfd}")
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body += [f"<h2>{html.escape(s.title)}</h2>", f"<p>{html.escape(s.intro)}</p>"]
        if s.frame.empty:
            body.append("<p>(none)</p>")
            continue
        head = "".join(f"<th>{html.escape(c)}</th>" for c in s.frame.columns)
        rows = []
        for row in s.frame.itertuples(index=False):
            status = dict(zip(s.frame.columns, row)).get("status", "")
            rows.append(f'<tr class="{html.escape(str(status))}">'
                        + "".join(f"<td>{html.escape(_show(v))}</td>" for v in row) + "</tr>")
        body.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")

