"""Tables of the report and their three renderings: CSV (machine), Markdown (README) and LaTeX
(booktabs, for papers).

A :class:`Table` holds raw values (floats in percent, ints, text) and says per column how to show
them: decimals, an optional ``±`` partner column and whether the best value is bold. Every
rendering, and the HTML page, formats cells through :func:`formatted`, so they show the same text.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Column:
    """One column: ``key`` into the rows, ``title`` shown in headers.

    ``kind`` "text" is left-aligned, "int" and "float" right-aligned; floats show ``decimals``
    places. ``std_key`` names the column whose value follows as ``± std`` (that column is then
    not shown on its own in Markdown, LaTeX or HTML, only in CSV). ``best`` ("max" or "min")
    bolds the best value shown (after rounding) in the column.
    """

    key: str
    title: str
    kind: Literal["text", "int", "float"] = "float"
    decimals: int = 2
    std_key: str | None = None
    best: Literal["max", "min"] | None = None


@dataclass
class Table:
    """Rows of raw values (``None`` or NaN: no value) with the columns that show them.

    ``name`` is the file stem (``leaderboard`` -> ``leaderboard.csv/.md/.tex``), ``title`` the
    caption, ``note`` a sentence printed under the table (what ``±`` and bold mean, units).
    ``std_columns`` are extra CSV-only columns (the ``std_key`` partners). A row may carry
    ``"_bold": {column keys}`` to bold those cells whatever their value (e.g. a significant
    difference). ``machine``, when set, is the table the CSV holds instead (e.g. a long format
    with one number per cell where this one shows formatted text).
    """

    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    note: str = ""
    std_columns: list[Column] = field(default_factory=list)
    machine: Table | None = None

    def column(self, key: str) -> Column:
        for col in [*self.columns, *self.std_columns]:
            if col.key == key:
                return col
        raise KeyError(f"table {self.name!r} has no column {key!r}")


def is_missing(value: Any) -> bool:
    """``None`` or a float NaN."""
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _number(value: Any, col: Column) -> str:
    if is_missing(value):
        return ""
    if col.kind == "float":
        return f"{float(value):.{col.decimals}f}"
    return str(value)


def _best(table: Table, col: Column) -> float | None:
    if col.best is None:
        return None
    shown = [round(float(r[col.key]), col.decimals) for r in table.rows if not is_missing(r.get(col.key))]
    if len(shown) < 2:
        return None  # a single value is not "best" of anything
    return max(shown) if col.best == "max" else min(shown)


def formatted(table: Table) -> list[list[tuple[str, bool]]]:
    """Display cells ``(text, bold)`` per row, one per column of ``table.columns``.

    Missing values show as ``n/a``; a float with a ``std_key`` partner shows as
    ``mean ± std`` (the std with the same decimals; left out when missing).
    """
    best = {col.key: _best(table, col) for col in table.columns}
    out = []
    for row in table.rows:
        cells = []
        for col in table.columns:
            value = row.get(col.key)
            text = _number(value, col) if col.kind != "text" else ("" if value is None else str(value))
            if col.kind != "text" and not text:
                text = "n/a"
            elif col.std_key is not None and not is_missing(row.get(col.std_key)):
                text += f" ± {_number(row[col.std_key], col)}"
            bold = col.key in row.get("_bold", ()) or (
                best[col.key] is not None
                and not is_missing(value)
                and round(float(value), col.decimals) == best[col.key]
            )
            cells.append((text, bold))
        out.append(cells)
    return out


def to_csv(table: Table) -> str:
    """CSV: header = column keys (std partners after the shown columns), floats with 4 decimals
    (more than shown, for machines), missing values as empty cells; ``table.machine`` when set."""
    if table.machine is not None:
        return to_csv(table.machine)
    columns = [*table.columns, *table.std_columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    for row in table.rows:
        cells = []
        for col in columns:
            value = row.get(col.key)
            if is_missing(value):
                cells.append("")
            elif col.kind == "float":
                cells.append(f"{float(value):.4f}")
            else:
                cells.append(value)
        writer.writerow(cells)
    return buf.getvalue()


def _markdown_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table, heading: bool = False) -> str:
    """GitHub table (bold best values); with ``heading`` a ``### title`` line before it; the
    note in italics after it."""
    lines = [f"### {table.title}", ""] if heading else []
    lines.append("| " + " | ".join(_markdown_escape(c.title) for c in table.columns) + " |")
    lines.append("|" + "|".join(":--" if c.kind == "text" else "--:" for c in table.columns) + "|")
    for cells in formatted(table):
        shown = [f"**{_markdown_escape(t)}**" if bold else _markdown_escape(t) for t, bold in cells]
        lines.append("| " + " | ".join(shown) + " |")
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``±``, ``Δ`` and ``†`` in math mode)."""
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return escaped.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("†", r"$^\dagger$")


def to_latex(table: Table, label: str | None = None) -> str:
    """A ``table`` float with a booktabs ``tabular``, shrunk to the text width when wider (needs
    ``\\usepackage{booktabs,graphicx}``); best
    values in ``\\textbf``; the title as caption, the note as a footnote-sized line below."""
    align = "".join("l" if c.kind == "text" else "r" for c in table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
    ]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [
        r"\small",
        # a table wider than the text shrinks to its width, a narrower one keeps its size (graphicx)
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c.title) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for cells in formatted(table):
        shown = [rf"\textbf{{{latex_escape(t)}}}" if bold else latex_escape(t) for t, bold in cells]
        lines.append(" & ".join(shown) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.note:
        lines.append(rf"\par\footnotesize {latex_escape(table.note)}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def renderings(table: Table) -> dict[str, str]:
    """``{"csv": ..., "md": ..., "tex": ...}`` of one table (suffix -> text)."""
    return {"csv": to_csv(table), "md": to_markdown(table), "tex": to_latex(table, label=f"tab:{table.name}")}
