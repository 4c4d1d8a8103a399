"""benchmark.report.tables: display cells and the CSV, Markdown and LaTeX renderings.

Expected texts are written out literally (or computed here with Python's own formatting), never
with the function under test.
"""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest

from benchmark.report.tables import Column, Table, formatted, is_missing, renderings, to_csv, to_latex, to_markdown

NAN = float("nan")
NOTE = "mean ± std over seeds; best in bold"


def _table(note: str = NOTE) -> Table:
    """Four rows covering: ties after rounding (score 70.004 and 70.001 both show 70.00 and are the
    best), a min column, missing values (None and NaN), a missing std, a forced bold cell, a pipe."""
    return Table(
        name="scores",
        title="Scores on toy",
        columns=[
            Column("method", "Method", "text"),
            Column("score", "Score", decimals=2, std_key="score_std", best="max"),
            Column("loss", "Loss (lower|better)", decimals=1, best="min"),
            Column("count", "Count", "int"),
        ],
        rows=[
            {"method": "alpha", "score": 70.004, "score_std": 1.2349, "loss": 0.36, "count": 3},
            {"method": "beta|x", "score": 70.001, "score_std": None, "loss": 0.26, "count": None},
            {"method": "gamma", "score": 65.5, "score_std": NAN, "loss": NAN, "count": 7, "_bold": {"count"}},
            {"method": None, "score": None, "score_std": 2.0, "loss": 0.31, "count": 2},
        ],
        note=note,
        std_columns=[Column("score_std", "score_std")],
    )


EXPECTED_CELLS = [
    [("alpha", False), ("70.00 ± 1.23", True), ("0.4", False), ("3", False)],
    [("beta|x", False), ("70.00", True), ("0.3", True), ("n/a", False)],
    [("gamma", False), ("65.50", False), ("n/a", False), ("7", True)],
    [("", False), ("n/a", False), ("0.3", True), ("2", False)],
]


# --- formatted ---------------------------------------------------------------------------------


def test_formatted_cells():
    assert formatted(_table()) == EXPECTED_CELLS


@pytest.mark.parametrize(
    ("mean", "std", "decimals", "text"),
    [
        (52.3456, 1.2349, 2, "52.35 ± 1.23"),
        (-1.5, 0.25, 2, "-1.50 ± 0.25"),
        (499.6, 12.4, 0, "500 ± 12"),
        (3.0, 0.04, 1, "3.0 ± 0.0"),
        (3.0, None, 1, "3.0"),
        (3.0, NAN, 3, "3.000"),
        (None, 1.0, 2, "n/a"),
        (NAN, 1.0, 2, "n/a"),
        (np.float64(NAN), None, 2, "n/a"),
    ],
)
def test_formatted_mean_std(mean, std, decimals: int, text: str):
    table = Table("t", "T", [Column("x", "X", decimals=decimals, std_key="x_std")], [{"x": mean, "x_std": std}])
    assert formatted(table) == [[(text, False)]]


def test_best_max_and_min_after_rounding():
    values = [10.004, 9.996, 10.001, 9.0, None]  # the first three all show 10.00
    rows = [{"hi": v, "lo": v} for v in values]
    table = Table("t", "T", [Column("hi", "Hi", best="max"), Column("lo", "Lo", best="min")], rows)
    cells = formatted(table)
    assert [c[0] for c in cells] == [
        ("10.00", True),
        ("10.00", True),
        ("10.00", True),
        ("9.00", False),
        ("n/a", False),
    ]
    assert [c[1] for c in cells] == [
        ("10.00", False),
        ("10.00", False),
        ("10.00", False),
        ("9.00", True),
        ("n/a", False),
    ]


@pytest.mark.parametrize("others", [[], [None], [NAN, None]])
@pytest.mark.parametrize("best", ["max", "min"])
def test_no_bold_with_a_single_value(best: str, others: list):
    rows = [{"x": 42.0}, *({"x": v} for v in others)]
    table = Table("t", "T", [Column("x", "X", best=best)], rows)  # type: ignore[arg-type]
    assert formatted(table) == [[("42.00", False)], *([("n/a", False)] for _ in others)]


def test_no_bold_without_best():
    table = Table("t", "T", [Column("x", "X")], [{"x": 1.0}, {"x": 2.0}])
    assert formatted(table) == [[("1.00", False)], [("2.00", False)]]


def test_bold_row_key():
    columns = [Column("name", "Name", "text"), Column("diff", "Diff", "text"), Column("x", "X")]
    rows = [
        {"name": "a", "diff": "+1.00 [+0.50, +1.50] *", "x": 1.0, "_bold": {"diff"}},
        {"name": "b", "diff": "-0.20 [-0.90, +0.40]", "x": 2.0, "_bold": set()},
        {"name": "c", "diff": "+0.10", "x": None, "_bold": ["name", "x"]},
    ]
    assert formatted(Table("t", "T", columns, rows)) == [
        [("a", False), ("+1.00 [+0.50, +1.50] *", True), ("1.00", False)],
        [("b", False), ("-0.20 [-0.90, +0.40]", False), ("2.00", False)],
        [("c", True), ("+0.10", False), ("n/a", True)],
    ]


def test_is_missing():
    assert is_missing(None) and is_missing(NAN) and is_missing(np.float64(NAN))
    assert not any(is_missing(v) for v in (0, 0.0, "", "n/a", np.int64(0), -math.inf))


def test_column_lookup():
    table = _table()
    assert table.column("loss").title == "Loss (lower|better)"
    assert table.column("score_std") == Column("score_std", "score_std")
    with pytest.raises(KeyError, match="nope"):
        table.column("nope")


# --- CSV ---------------------------------------------------------------------------------------

EXPECTED_CSV = (
    "method,score,loss,count,score_std\n"
    "alpha,70.0040,0.3600,3,1.2349\n"
    "beta|x,70.0010,0.2600,,\n"
    "gamma,65.5000,,7,\n"
    ",,0.3100,2,2.0000\n"
)


def test_csv_text():
    assert to_csv(_table()) == EXPECTED_CSV


def test_csv_parses_back_to_the_raw_values():
    table = _table()
    table.rows[0]["method"] = 'a, "quoted"\nname'  # needs CSV quoting
    kinds = {"method": "text", "score": "float", "loss": "float", "count": "int", "score_std": "float"}
    parsed = list(csv.reader(io.StringIO(to_csv(table))))
    assert parsed[0] == list(kinds)  # shown columns, then std columns
    assert len(parsed) == 1 + len(table.rows)
    for row, cells in zip(table.rows, parsed[1:]):
        assert len(cells) == len(kinds)
        for (key, kind), cell in zip(kinds.items(), cells):
            raw = row[key]
            if raw is None or (isinstance(raw, float) and math.isnan(raw)):
                assert cell == ""
            elif kind == "float":
                assert re.fullmatch(r"-?\d+\.\d{4}", cell), cell
                assert abs(float(cell) - raw) <= 0.5e-4
            elif kind == "int":
                assert int(cell) == raw
            else:
                assert cell == raw


def test_csv_uses_the_machine_table():
    machine = Table(
        "comparison",
        "",
        [Column("method", "method", "text"), Column("diff", "diff"), Column("significant", "significant", "int")],
        [{"method": "a", "diff": 1.23456, "significant": 1}, {"method": "b", "diff": -0.5, "significant": 0}],
    )
    table = _table()
    table.machine = machine
    assert to_csv(table) == "method,diff,significant\na,1.2346,1\nb,-0.5000,0\n"
    assert to_markdown(table).startswith("| Method | Score |")  # the other renderings keep the table


# --- Markdown ----------------------------------------------------------------------------------

EXPECTED_MD_ROWS = [
    "| Method | Score | Loss (lower\\|better) | Count |",
    "|:--|--:|--:|--:|",
    "| alpha | **70.00 ± 1.23** | 0.4 | 3 |",
    "| beta\\|x | **70.00** | **0.3** | n/a |",
    "| gamma | 65.50 | n/a | **7** |",
    "|  | n/a | **0.3** | 2 |",
]


def test_markdown():
    assert to_markdown(_table()) == "\n".join([*EXPECTED_MD_ROWS, "", f"*{NOTE}*"]) + "\n"


def test_markdown_heading_and_no_note():
    text = to_markdown(_table(note=""), heading=True)
    assert text == "\n".join(["### Scores on toy", "", *EXPECTED_MD_ROWS]) + "\n"


def test_markdown_rows_have_one_cell_per_column():
    lines = to_markdown(_table()).splitlines()
    for line in lines[: len(EXPECTED_MD_ROWS)]:
        assert len(re.findall(r"(?<!\\)\|", line)) == 4 + 1  # std column not shown


# --- LaTeX -------------------------------------------------------------------------------------

SPECIAL = "a_b%c&d#e$f{g}h~i^j\\k"
SPECIAL_TEX = r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"


def _unescaped_ampersands(line: str) -> int:
    return len(re.findall(r"(?<!\\)&", line))


def test_latex_structure():
    lines = to_latex(_table(), label="tab:scores").splitlines()
    assert lines[:3] == [r"\begin{table}[t]", r"\centering", r"\caption{Scores on toy}"]
    assert r"\label{tab:scores}" in lines
    begin = lines.index(r"\begin{tabular}{lrrr}")
    # shrinks to the text width only when wider: \resizebox{<width or linewidth>}{!}{<tabular>}
    assert lines[begin - 1] == r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
    top, mid, bottom = (lines.index(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert top < mid < bottom and mid == top + 2
    assert lines[top + 1] == r"Method & Score & Loss (lower|better) & Count \\"
    assert lines[mid + 1 : bottom] == [
        r"alpha & \textbf{70.00 $\pm$ 1.23} & 0.4 & 3 \\",
        r"beta|x & \textbf{70.00} & \textbf{0.3} & n/a \\",
        r"gamma & 65.50 & n/a & \textbf{7} \\",
        r" & n/a & \textbf{0.3} & 2 \\",
    ]
    for line in lines[top + 1 : bottom]:
        if line != r"\midrule":
            assert _unescaped_ampersands(line) == 3 and line.endswith(r" \\")
    assert lines[bottom + 1 :] == [
        r"\end{tabular}}",
        r"\par\footnotesize mean $\pm$ std over seeds; best in bold",
        r"\end{table}",
    ]


def test_latex_without_label_or_note():
    text = to_latex(_table(note=""))
    assert r"\label" not in text and r"\footnotesize" not in text
    assert text.endswith("\\bottomrule\n\\end{tabular}}\n\\end{table}\n")


def test_latex_escapes_special_characters():
    table = Table(
        "special",
        f"Title {SPECIAL} ± Δ",
        [Column("name", f"N{SPECIAL}", "text"), Column("x", "x_1 (%)", best="max")],
        [{"name": SPECIAL, "x": 1.0}, {"name": "plain ± Δ", "x": 2.0}],
        note=f"Note {SPECIAL}",
    )
    lines = to_latex(table, label="tab:special").splitlines()
    assert rf"\caption{{Title {SPECIAL_TEX} $\pm$ $\Delta$}}" in lines
    assert rf"N{SPECIAL_TEX} & x\_1 (\%) \\" in lines
    assert rf"{SPECIAL_TEX} & 1.00 \\" in lines
    assert r"plain $\pm$ $\Delta$ & \textbf{2.00} \\" in lines
    assert rf"\par\footnotesize Note {SPECIAL_TEX}" in lines
    for line in lines:
        if line.endswith(r" \\"):
            assert _unescaped_ampersands(line) == 1


# --- renderings --------------------------------------------------------------------------------


def test_renderings():
    table = _table()
    out = renderings(table)
    assert set(out) == {"csv", "md", "tex"}
    assert out["csv"] == EXPECTED_CSV
    assert out["md"].splitlines()[: len(EXPECTED_MD_ROWS)] == EXPECTED_MD_ROWS
    assert r"\label{tab:scores}" in out["tex"].splitlines()
    assert r"\caption{Scores on toy}" in out["tex"].splitlines()
