"""Every number printed in the VARiant paper, as data (numbers.csv, one row per number).

Columns: id (stable key, e.g. ``table2/VARiant-d16/latency_s``), table (``table1``..``table8``,
``abstract``, ``text``, ``figure2a``.., ``algorithm1``..), row, column, value, unit, where (how
to find it in the paper) and quote (the printed text).

Conventions:
- value is a float in `unit`; percentages stay percentages (73.6 with unit ``%``), "675M" and
  "2.0B" become plain counts (6.75e8 params), "1 x 10^-6" becomes 1e-06.
- A table cell that holds no number keeps its row so tables keep their grid: "OOM" is an empty
  value with unit ``OOM`` (Table 3's OOM spans three columns: one row per column), "–" is an
  empty value with unit ``n/a``.
- A range "a–b" is two rows whose ids end in ``_min``/``_max``; a bound ("> 130", "less than 4",
  "<= 2.2", "≈30%") is one row whose quote shows the operator.
- A sum as printed ("6+4" steps, "2.0+0.3B") is stored as its total; the quote keeps the parts.
- A ratio "subnet : full" (2:8, 10:0) is stored as the subnet share (0.2, 1.0).
- "MB"/"GB" are the paper's labels; the consistency check reads MB as MiB and GB as 1000 MB.
- Not transcribed: labels that contain digits (model names like VAR-d30, scales r_1..r_10,
  "ImageNet 256x256", "FP16", section/equation/figure/reference numbers).
"""
from __future__ import annotations

import functools
from importlib import resources

import pandas as pd

COLUMNS = ("id", "table", "row", "column", "value", "unit", "where", "quote")
NON_NUMERIC_UNITS = ("OOM", "n/a")


def validate_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the columns, ids and values of a numbers frame; return it with float values.

    Raises ValueError naming the first bad row (its CSV line, counting the header as 1).
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"paper numbers lack the columns {missing}")
    frame = frame.reset_index(drop=True)
    seen: dict[str, int] = {}
    values = []
    for i, row in frame.iterrows():
        where = f"line {i + 2} (id {row['id']!r})"
        if not isinstance(row["id"], str) or not row["id"]:
            raise ValueError(f"paper numbers {where}: empty id")
        if row["id"] in seen:
            raise ValueError(f"paper numbers {where}: duplicate id, first on line {seen[row['id']]}")
        seen[row["id"]] = i + 2
        raw = "" if pd.isna(row["value"]) else str(row["value"]).strip()
        if row["unit"] in NON_NUMERIC_UNITS:
            if raw:
                raise ValueError(f"paper numbers {where}: unit {row['unit']} must have an empty value")
            values.append(float("nan"))
            continue
        try:
            values.append(float(raw))
        except ValueError:
            raise ValueError(f"paper numbers {where}: value {raw!r} is not a number") from None
    return frame.assign(value=values)


@functools.cache
def _packaged() -> pd.DataFrame:
    # keep_default_na=False: the unit "n/a" must stay a string, not become NaN.
    with resources.files(__package__).joinpath("numbers.csv").open(encoding="utf-8") as f:
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    return validate_numbers(frame)


def load_paper_numbers() -> pd.DataFrame:
    """The packaged numbers, validated (a fresh copy: callers may edit it)."""
    return _packaged().copy()


def paper_value(id: str) -> float:
    """The value of one number; KeyError for an unknown id, ValueError for an OOM or "–" cell."""
    rows = _packaged().loc[lambda f: f["id"] == id]
    if rows.empty:
        raise KeyError(f"no paper number with id {id!r}")
    row = rows.iloc[0]
    if row["unit"] in NON_NUMERIC_UNITS:
        raise ValueError(f"paper number {id!r} is printed as {row['quote']!r}, not a number")
    return float(row["value"])


def paper_table(table: str) -> pd.DataFrame:
    """All rows of one table (e.g. "table3", "abstract"), in paper order."""
    frame = _packaged()
    rows = frame[frame["table"] == table]
    if rows.empty:
        raise KeyError(f"no paper table {table!r}; known: {sorted(frame['table'].unique())}")
    return rows.reset_index(drop=True)
