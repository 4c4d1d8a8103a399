"""The report as one self-contained HTML5 page: tables, figures and a provenance section.

The page needs nothing else to display: CSS is inline (one ``<style>`` block), figures are PNG
``data:`` URIs, there is no script and no external URL in any ``src``/``href``. Table cells come
from :func:`benchmark.report.tables.formatted`, so they show the same text as the CSV, Markdown
and LaTeX renderings. The output is a pure function of the input (no timestamps), so rebuilding
an unchanged report gives the same bytes.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any

from benchmark.report.tables import Column, Table, formatted

CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #fff; color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.8em; margin: 0.2em 0 0.6em; }
h2 { font-size: 1.35em; margin: 1.8em 0 0.6em; padding-bottom: 0.2em; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.1em; margin: 1.2em 0 0.4em; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 20px; }
nav.toc ol { margin: 0.3em 0; padding-left: 1.4em; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: 1em 0 0.3em; }
table { border-collapse: collapse; font-size: 0.92em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 6px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; vertical-align: top; white-space: nowrap; }
thead th { background: #eaeef2; text-align: left; }
tbody tr:nth-child(even) { background: #f6f8fa; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td strong { font-weight: 700; }
td.hash { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; word-break: break-all;
  white-space: normal; }
p.note { color: #57606a; font-size: 0.88em; margin: 0.2em 0 1.2em; }
figure { margin: 1.2em 0; overflow-x: auto; }
/* figures at their own size (120 dpi): wide ones scroll rather than shrink below legibility */
figure img { max-width: none; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.9em; margin-top: 4px; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px;
  overflow-x: auto; font-size: 0.85em; line-height: 1.4; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
""".strip()

PROVENANCE_TITLE = "Provenance"


@dataclass
class Figure:
    """A PNG image: ``name`` (file stem, part of the HTML id), ``caption`` (also the alt text)."""

    name: str
    caption: str
    png: bytes


@dataclass
class Section:
    """A titled part of the page: plain-text paragraphs (blank-line separated), then tables, then
    figures."""

    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    text: str = ""


def slug(text: str) -> str:
    """``text`` lowercased with every run of characters other than ASCII letters and digits turned
    into one ``-`` (none at the ends); ``"section"`` when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _paragraphs(text: str) -> list[str]:
    blocks = re.split(r"\n\s*\n", text.strip())
    return [f"<p>{escape(' '.join(block.split()))}</p>" for block in blocks if block.strip()]


def table_html(table: Table, table_id: str, hash_keys: tuple[str, ...] = ()) -> str:
    """One ``<table id=table_id>`` with caption, header, the :func:`formatted` cells (best ones in
    ``<strong>``) and the note in a ``<p class="note">`` below. Columns in ``hash_keys`` use a
    monospace, wrapping style (checksums)."""

    def cls(col: Column) -> str:
        names = (["num"] if col.kind != "text" else []) + (["hash"] if col.key in hash_keys else [])
        return f' class="{" ".join(names)}"' if names else ""

    lines = [
        '<div class="table-wrap">',
        f'<table id="{escape(table_id)}">',
        f"<caption>{escape(table.title)}</caption>",
        "<thead><tr>"
        + "".join(f'<th scope="col"{cls(c)}>{escape(c.title)}</th>' for c in table.columns)
        + "</tr></thead>",
        "<tbody>",
    ]
    for cells in formatted(table):
        tds = []
        for col, (text, bold) in zip(table.columns, cells, strict=True):
            shown = f"<strong>{escape(text)}</strong>" if bold else escape(text)
            tds.append(f"<td{cls(col)}>{shown}</td>")
        lines.append("<tr>" + "".join(tds) + "</tr>")
    lines += ["</tbody>", "</table>", "</div>"]
    if table.note:
        lines.append(f'<p class="note">{escape(table.note)}</p>')
    return "\n".join(lines)


def figure_html(figure: Figure, figure_id: str) -> str:
    """A ``<figure>`` with the PNG inline as a ``data:`` URI, alt text and caption."""
    data = base64.b64encode(figure.png).decode("ascii")
    caption = escape(figure.caption)
    return "\n".join(
        [
            f'<figure id="{escape(figure_id)}">',
            f'<img src="data:image/png;base64,{data}" alt="{caption}">',
            f"<figcaption>{caption}</figcaption>",
            "</figure>",
        ]
    )


def _text_table(name: str, title: str, columns: list[tuple[str, str]], rows: list[dict], note: str = "") -> Table:
    return Table(name, title, [Column(key, head, kind="text") for key, head in columns], rows, note=note)


def _show(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "unknown"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def provenance_html(provenance: dict[str, Any], anchor: str) -> str:
    """Body of the provenance section: git commit, packages, hardware, data checksums, params."""
    out: list[str] = []
    git = provenance.get("git") or {}
    commit = git.get("commit")
    if commit:
        line = f"Git commit: <code>{escape(str(commit))}</code>"
        if git.get("dirty"):
            line += " (uncommitted changes)"
        elif git.get("dirty") is None:
            line += " (working tree state unknown)"
        if git.get("describe"):
            line += f"; <code>git describe</code>: <code>{escape(str(git['describe']))}</code>"
        out.append(f"<p>{line}.</p>")
    else:
        out.append("<p>Git commit: not available (not a git repository, or git not installed).</p>")

    packages = provenance.get("packages") or {}
    out.append(
        table_html(
            _text_table(
                "packages",
                "Software versions",
                [("name", "Package"), ("version", "Version")],
                [{"name": name, "version": str(version)} for name, version in packages.items()],
                note="Packages not installed are left out.",
            ),
            f"{anchor}-packages",
        )
    )

    hw = provenance.get("hardware") or {}
    memory = hw.get("memory_gb")
    hw_rows = [
        ("Platform", _show(hw.get("platform"))),
        ("Machine", _show(hw.get("machine"))),
        ("Processor", _show(hw.get("processor"))),
        ("CPU cores", _show(hw.get("cpu_count"))),
        ("Memory", "unknown" if memory is None else f"{memory} GiB"),
        ("GPUs", ", ".join(hw.get("gpus") or []) or "none"),
    ]
    out.append(
        table_html(
            _text_table(
                "hardware",
                "Hardware (of the machine that built this report)",
                [("item", "Item"), ("value", "Value")],
                [{"item": k, "value": v} for k, v in hw_rows],
            ),
            f"{anchor}-hardware",
        )
    )

    data_rows = []
    for dataset, info in (provenance.get("data") or {}).items():
        prepared = (info or {}).get("prepared") or {}
        if prepared:
            data_rows += [{"dataset": dataset, "file": f, "sha256": prepared[f]} for f in sorted(prepared)]
        else:
            data_rows.append({"dataset": dataset, "file": "prepared data", "sha256": "not found"})
        manifest = (info or {}).get("raw_manifest_sha256")
        data_rows.append({"dataset": dataset, "file": "raw manifest.json", "sha256": manifest or "not found"})
    out.append(
        table_html(
            _text_table(
                "data",
                "Data checksums",
                [("dataset", "Data set"), ("file", "File"), ("sha256", "SHA-256")],
                data_rows,
                note="Files of the prepared data set (relative to its folder) and the raw download manifest.",
            ),
            f"{anchor}-data",
            hash_keys=("sha256",),
        )
    )

    params = provenance.get("params") or ""
    out.append("<h3>params.yaml</h3>")
    out.append(f"<pre><code>{escape(params) if params else '(not found)'}</code></pre>")
    return "\n".join(out)


def _unique_anchors(titles: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    anchors = []
    for title in titles:
        base = slug(title)
        seen[base] = seen.get(base, 0) + 1
        anchors.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return anchors


def render(title: str, sections: list[Section], provenance: dict[str, Any]) -> str:
    """The whole page as a string.

    Each section gets the anchor ``slug(title)`` (a repeated slug gets ``-2``, ``-3``...), each
    table the id ``{anchor}-{table.name}`` and each figure ``{anchor}-fig-{figure.name}``. A last
    section "Provenance" shows ``provenance`` (the dict of :func:`provenance.collect`).
    """
    titles = [s.title for s in sections] + [PROVENANCE_TITLE]
    anchors = _unique_anchors(titles)
    body = [f"<h1>{escape(title)}</h1>", '<nav class="toc">', "<strong>Contents</strong>", "<ol>"]
    body += [f'<li><a href="#{a}">{escape(t)}</a></li>' for t, a in zip(titles, anchors, strict=True)]
    body += ["</ol>", "</nav>"]
    for section, anchor in zip(sections, anchors, strict=False):
        body.append(f'<section id="{anchor}">')
        body.append(f"<h2>{escape(section.title)}</h2>")
        body += _paragraphs(section.text)
        body += [table_html(t, f"{anchor}-{t.name}") for t in section.tables]
        body += [figure_html(f, f"{anchor}-fig-{slug(f.name)}") for f in section.figures]
        body.append("</section>")
    body.append(f'<section id="{anchors[-1]}">')
    body.append(f"<h2>{PROVENANCE_TITLE}</h2>")
    body.append(provenance_html(provenance, anchors[-1]))
    body.append("</section>")
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
    ]
    return "\n".join([*head, *body, "</main>", "</body>", "</html>"]) + "\n"
