"""The HTML report page (benchmark.report.html) and its provenance (benchmark.report.provenance).

Unit tests parse the page with the stdlib HTML parser and compare every table cell with
``tables.formatted``; the browser test loads the page in headless Chromium and checks the DOM the
browser built and a screenshot.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

from benchmark.report import provenance as prov
from benchmark.report.html import Figure, Section, render, slug
from benchmark.report.tables import Column, Table, formatted

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RED = (1.0, 0.0, 0.0)
FIG_PX = (60, 120)  # rows, columns of the test figure in pixels


# ---------------------------------------------------------------------------------------------
# Fixtures: two sections with hand-made tables and a matplotlib figure


def _png() -> bytes:
    """A small matplotlib PNG: a pure red field with a blue right quarter, FIG_PX pixels."""
    h, w = FIG_PX
    dpi = 60
    fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    img = np.zeros((h, w, 3))
    img[:, :] = RED
    img[:, 3 * w // 4 :] = (0.0, 0.0, 1.0)
    ax.imshow(img, interpolation="nearest", aspect="auto")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _sections(png: bytes) -> list[Section]:
    leaderboard = Table(
        "leaderboard",
        "Leaderboard <mIoU> & friends",
        [
            Column("method", "Method", kind="text"),
            Column("seeds", "Seeds", kind="int"),
            Column("avg", "Avg", std_key="avg_std", best="max"),
            Column("last1", "Last-1", decimals=1, best="min"),
        ],
        [
            {"method": "muss <base> & co", "seeds": 2, "avg": 51.234, "avg_std": 1.5, "last1": 12.34},
            {"method": "sgma", "seeds": 3, "avg": 60.0, "avg_std": float("nan"), "last1": float("nan")},
            {"method": "m3l", "seeds": None, "avg": float("nan"), "avg_std": None, "last1": 10.04},
        ],
        note="Mean ± std over seeds; bold: best <per column> & rounded.",
        std_columns=[Column("avg_std", "Avg std")],
    )
    per_class = Table(
        "per_class",
        "Per-class IoU",
        [Column("cls", "Class", kind="text"), Column("iou", "IoU (%)", decimals=3, best="max")],
        [{"cls": "road", "iou": 80.5}, {"cls": "tree", "iou": 33.3333}, {"cls": "car", "iou": None}],
    )
    efficiency = Table(
        "efficiency",
        "Efficiency",
        [Column("method", "Method", kind="text"), Column("gflops", "GFLOPs", decimals=1, best="min")],
        [{"method": "muss", "gflops": 3.21}, {"method": "sgma", "gflops": 4.0}],
        note="Forward pass of one 256x256 tile.",
    )
    return [
        Section(
            "Results on <synthetic> & Co",
            [leaderboard, per_class],
            [Figure("heatmap", 'mIoU <heatmap> & "quotes"', png)],
            text="First paragraph with <b>not bold</b> & an ampersand.\n\nSecond paragraph.",
        ),
        Section("Efficiency", [efficiency], []),
    ]


def _provenance() -> dict:
    return {
        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True, "describe": "v1-3-g0123456"},
        "params": "datasets:\n  - synthetic  # <a> & b\n",
        "packages": {"python": "3.11.0", "numpy": np.__version__},
        "hardware": {
            "platform": "Linux-x",
            "machine": "x86_64",
            "processor": "",
            "cpu_count": 2,
            "memory_gb": 7.5,
            "gpus": [],
        },
        "data": {
            "synthetic": {"prepared": {"b.npz": "bb" * 32, "a/x.npy": "aa" * 32}, "raw_manifest_sha256": None},
            "potsdam": {"prepared": {}, "raw_manifest_sha256": "cc" * 32},
        },
    }


@pytest.fixture(scope="module")
def page_input() -> tuple[str, list[Section], dict, bytes]:
    png = _png()
    return "Report <title> & more", _sections(png), _provenance(), png


# ---------------------------------------------------------------------------------------------
# A small HTML reader (stdlib HTMLParser)


class PageReader(HTMLParser):
    """Collects tables (by id), images, figure captions, tag names, src/href attributes, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.images: list[dict[str, str]] = []
        self.figcaptions: list[str] = []
        self.tables: dict[str, dict] = {}
        self.ids: list[str] = []
        self.paragraphs: list[str] = []
        self.pre: list[str] = []
        self.title = ""
        self._table: dict | None = None
        self._part = ""  # "thead" or "tbody" inside a table
        self._cell: list | None = None  # [text, bold] of the open cell
        self._row: list | None = None
        self._capture: str | None = None  # "caption", "figcaption", "p", "pre", "title"
        self._buf: list[str] = []
        self._strong = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = {k: (v or "") for k, v in attrs}
        for key in ("src", "href"):
            if key in a:
                self.links.append((tag, key, a[key]))
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = {"caption": "", "head": [], "rows": [], "classes": []}
            self.tables[a.get("id", "")] = self._table
            self._part = "tbody"
        elif tag in ("thead", "tbody") and self._table is not None:
            self._part = tag
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ["", False, a.get("class", "")]
        elif tag == "strong" and self._cell is not None:
            self._strong += 1
            self._cell[1] = True
        elif tag in ("caption", "figcaption", "p", "pre", "title"):
            self._capture, self._buf = tag, []
            self._p_class = a.get("class", "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "strong" and self._cell is not None:
            self._strong -= 1
        elif tag == "tr" and self._row is not None and self._table is not None:
            cells = self._row
            if self._part == "thead":
                self._table["head"] = [c[0] for c in cells]
            else:
                self._table["rows"].append([(c[0], c[1]) for c in cells])
                self._table["classes"].append([c[2] for c in cells])
            self._row = None
        elif tag == "thead":
            self._part = "tbody"
        elif tag == "table":
            self._table = None
        elif tag == self._capture:
            text = "".join(self._buf)
            if tag == "caption" and self._table is not None:
                self._table["caption"] = text
            elif tag == "figcaption":
                self.figcaptions.append(text)
            elif tag == "p":
                self.paragraphs.append((self._p_class, text))
            elif tag == "pre":
                self.pre.append(text)
            elif tag == "title":
                self.title = text
            self._capture = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0] += data
        if self._capture is not None:
            self._buf.append(data)


def read_page(text: str) -> PageReader:
    reader = PageReader()
    reader.feed(text)
    reader.close()
    return reader


def check_tables(reader: PageReader, sections: list[Section]) -> None:
    """Every table of every section is in the page with id, caption, header and formatted cells."""
    for section in sections:
        for table in section.tables:
            tid = f"{slug(section.title)}-{table.name}"
            assert tid in reader.tables, f"table {tid!r} missing; have {sorted(reader.tables)}"
            got = reader.tables[tid]
            assert got["caption"] == table.title
            assert got["head"] == [c.title for c in table.columns]
            assert got["rows"] == formatted(table)
            numeric = [c.kind != "text" for c in table.columns]
            for classes in got["classes"]:
                assert ["num" in c.split() for c in classes] == numeric
            if table.note:
                assert ("note", table.note) in reader.paragraphs


def check_self_contained(reader: PageReader) -> None:
    assert "script" not in reader.tags
    assert "link" not in reader.tags
    assert "iframe" not in reader.tags
    for tag, key, value in reader.links:
        assert "http://" not in value and "https://" not in value, (tag, key, value)
        assert not value.startswith("//"), (tag, key, value)
        if key == "href":
            assert value.startswith("#"), (tag, key, value)
            assert value[1:] in reader.ids, f"link to a missing anchor {value}"
        else:
            assert value.startswith("data:image/png;base64,"), (tag, key, value[:40])


# ---------------------------------------------------------------------------------------------
# Unit tests


def test_tables_match_formatted(page_input) -> None:
    title, sections, provenance, _ = page_input
    reader = read_page(render(title, sections, provenance))
    check_tables(reader, sections)
    # The hand-made cases are really there: a "±" cell, a missing value, a bold best value.
    lb = reader.tables[f"{slug(sections[0].title)}-leaderboard"]["rows"]
    assert lb[0][2] == ("51.23 ± 1.50", False)
    assert lb[1][2] == ("60.00", True)
    assert lb[2][2] == ("n/a", False) and lb[2][1] == ("n/a", False)
    assert lb[2][3] == ("10.0", True) and lb[0][3] == ("12.3", False)
    assert lb[0][0] == ("muss <base> & co", False)
    # the std column is shown only inside the "±" cell
    assert reader.tables[f"{slug(sections[0].title)}-leaderboard"]["head"] == ["Method", "Seeds", "Avg", "Last-1"]


def test_self_contained_and_images(page_input) -> None:
    title, sections, provenance, png = page_input
    page = render(title, sections, provenance)
    reader = read_page(page)
    check_self_contained(reader)
    assert len(reader.images) == 1
    img = reader.images[0]
    prefix = "data:image/png;base64,"
    decoded = base64.b64decode(img["src"][len(prefix) :], validate=True)
    assert decoded == png and decoded[:8] == b"\x89PNG\r\n\x1a\n"
    caption = sections[0].figures[0].caption
    assert img["alt"] == caption
    assert reader.figcaptions == [caption]


def test_escaping_and_structure(page_input) -> None:
    title, sections, provenance, _ = page_input
    page = render(title, sections, provenance)
    reader = read_page(page)
    assert page.startswith("<!DOCTYPE html>")
    assert reader.title == title
    # raw markup from the inputs never reaches the page as markup
    for raw in ("<mIoU>", "<base>", "<b>not bold</b>", "<synthetic>", "<title> & more", "<heatmap>", "<a> & b"):
        assert raw not in page
    assert "b" not in reader.tags  # the "<b>" inside section text stayed text
    assert "&lt;mIoU&gt; &amp; friends" in page
    assert ("", "First paragraph with <b>not bold</b> & an ampersand.") in reader.paragraphs
    assert ("", "Second paragraph.") in reader.paragraphs
    # table of contents: one link per section plus provenance, to existing section anchors
    anchors = [v for tag, k, v in reader.links if k == "href"]
    assert anchors == [f"#{slug(s.title)}" for s in sections] + ["#provenance"]
    assert reader.tags.count("section") == len(sections) + 1
    assert "style" in reader.tags


def test_provenance_section(page_input) -> None:
    title, sections, provenance, _ = page_input
    page = render(title, sections, provenance)
    reader = read_page(page)
    assert provenance["git"]["commit"] in page
    assert "(uncommitted changes)" in page
    assert reader.pre == [provenance["params"]]
    pk = reader.tables["provenance-packages"]
    assert [r[0][0] for r in pk["rows"]] == list(provenance["packages"])
    assert [r[1][0] for r in pk["rows"]] == list(provenance["packages"].values())
    hw = {r[0][0]: r[1][0] for r in reader.tables["provenance-hardware"]["rows"]}
    assert hw["CPU cores"] == "2" and hw["Memory"] == "7.5 GiB" and hw["GPUs"] == "none"
    data = [tuple(c[0] for c in r) for r in reader.tables["provenance-data"]["rows"]]
    expected = []
    for dataset, info in provenance["data"].items():
        files = info["prepared"]
        expected += [(dataset, f, files[f]) for f in sorted(files)] or [(dataset, "prepared data", "not found")]
        expected.append((dataset, "raw manifest.json", info["raw_manifest_sha256"] or "not found"))
    assert data == expected
    # clean tree and no git at all
    clean = dict(provenance, git={"commit": "abc", "dirty": False})
    assert "(uncommitted changes)" not in render(title, sections, clean)
    nogit = dict(provenance, git={"commit": None, "dirty": None})
    assert "Git commit: not available" in render(title, sections, nogit)
    # an empty provenance dict still renders
    reader = read_page(render(title, sections, {}))
    check_tables(reader, sections)


def test_deterministic(page_input) -> None:
    title, sections, provenance, png = page_input
    first = render(title, sections, provenance)
    again = render(title, _sections(png), _provenance())
    assert first == again
    other = _sections(png)
    other[1].tables[0].rows[0]["gflops"] = 3.3
    assert render(title, other, provenance) != first


def test_slug() -> None:
    assert slug("Results on <synthetic> & Co") == "results-on-synthetic-co"
    assert slug("Per-class IoU (%)") == "per-class-iou"
    assert slug("ABC_12") == "abc-12"


def _write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def test_provenance_collect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    prepared, raw = tmp_path / "prepared", tmp_path / "raw"
    files = {
        "train/x.npy": _write(prepared / "ds" / "train" / "x.npy", rng.bytes(3 << 20 | 17)),  # several chunks
        "meta.json": _write(prepared / "ds" / "meta.json", b'{"a": 1}'),
        "empty.bin": _write(prepared / "ds" / "empty.bin", b""),
    }
    manifest = _write(raw / "ds" / "manifest.json", b'{"files": []}\n')
    params = tmp_path / "params.yaml"
    params.write_text("datasets: [ds]\n", encoding="utf-8")
    repo = tmp_path / "not_a_repo"
    repo.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a repo above

    out = prov.collect(params, ["ds", "absent"], prepared_root=prepared, raw_root=raw, repo=repo)

    assert set(out) == {"git", "params", "packages", "hardware", "data"}
    assert out["params"] == "datasets: [ds]\n"
    ds = out["data"]["ds"]
    assert list(ds["prepared"]) == sorted(files)
    assert ds["prepared"] == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert ds["raw_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert out["data"]["absent"] == {"prepared": {}, "raw_manifest_sha256": None}
    assert out["git"]["commit"] is None and out["git"]["dirty"] is None
    assert out["packages"]["numpy"] == np.__version__
    assert out["packages"]["matplotlib"] == matplotlib.__version__
    assert "python" in out["packages"]
    hw = out["hardware"]
    assert hw["cpu_count"] == os.cpu_count()
    assert hw["memory_gb"] is None or hw["memory_gb"] > 0
    assert isinstance(hw["gpus"], list)
    # deterministic: the same inputs give the same dict
    assert prov.collect(params, ["ds", "absent"], prepared_root=prepared, raw_root=raw, repo=repo) == out
    # a changed byte changes that file's hash only
    (prepared / "ds" / "meta.json").write_bytes(b'{"a": 2}')
    changed = prov.collect(params, ["ds"], prepared_root=prepared, raw_root=raw, repo=repo)["data"]["ds"]["prepared"]
    assert [k for k in changed if changed[k] != ds["prepared"][k]] == ["meta.json"]


@pytest.mark.slow  # starts git
def test_provenance_git_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git output is parsed (a stand-in ``git`` on PATH), and a missing git gives None values."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "git"
    commit = hashlib.sha1(b"x").hexdigest()
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = rev-parse ]; then echo {commit}; exit 0; fi\n'
        'if [ "$1" = status ]; then cat "$FAKE_GIT_STATUS"; exit 0; fi\n'
        'if [ "$1" = describe ]; then echo v0-dirty; exit 0; fi\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    status = tmp_path / "status.txt"
    monkeypatch.setenv("FAKE_GIT_STATUS", str(status))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")  # the stand-in first
    status.write_text(" M benchmark/report/html.py\n")
    assert prov.git_info(tmp_path) == {"commit": commit, "dirty": True, "describe": "v0-dirty"}
    status.write_text("")
    assert prov.git_info(tmp_path)["dirty"] is False
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert prov.git_info(tmp_path) == {"commit": None, "dirty": None, "describe": None}


# ---------------------------------------------------------------------------------------------
# Browser test: what headless Chromium builds and shows


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        f"--user-data-dir={profile}",
    ]
    # stderr carries harmless dbus noise; only the return code and the outputs are checked
    return subprocess.run([binary, *flags, *args], capture_output=True, timeout=60, check=False)


@pytest.mark.slow  # starts a browser
def test_in_chromium(page_input, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium/Chrome found on PATH; .ci/run installs Debian's chromium with apt-get")
    title, sections, provenance, _ = page_input
    page = tmp_path / "report.html"
    page.write_text(render(title, sections, provenance), encoding="utf-8")
    url = page.resolve().as_uri()

    dom = _run_browser(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    reader = read_page(dom.stdout.decode("utf-8"))
    check_tables(reader, sections)  # chromium's DOM (with its own <tbody>) holds the same cells
    check_self_contained(reader)
    assert reader.title == title
    assert len(reader.images) == 1 and reader.images[0]["alt"] == sections[0].figures[0].caption

    shot = tmp_path / "shot.png"
    run = _run_browser(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1600", url)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    assert shot.is_file() and shot.stat().st_size > 0
    pixels = mpimg.imread(shot)[..., :3].astype(np.float64)  # H, W, 3 in [0, 1]
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    non_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.std() > 0.02, "screenshot is (nearly) uniform"
    assert non_white > 0.005, f"only {non_white:.4f} of the screenshot is not white"
    # the inline PNG was decoded and drawn: its pure red pixels appear (border and scaling aside)
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.1) & (pixels[..., 2] < 0.1)
    h, w = FIG_PX
    red_area = h * (3 * w // 4)
    assert red.sum() > 0.5 * red_area, f"{red.sum()} red pixels, the figure has {red_area}"
    assert not math.isnan(pixels.mean())


@pytest.mark.slow  # starts git
def test_provenance_dirty_means_changed_tracked_files(tmp_path: Path) -> None:
    """With real git: what the pipeline writes is not an "uncommitted change"; new or edited code is."""
    if shutil.which("git") is None:
        pytest.skip("git not found on PATH")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "code.py").write_text("x = 1\n")
    for args in (
        ["init", "-q"],
        ["add", "code.py"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    (repo / "results" / "runs" / "toy").mkdir(parents=True)
    (repo / "results" / "runs" / "toy" / "metrics.json").write_text("{}")  # what the pipeline writes
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    info = prov.git_info(repo)
    assert len(info["commit"]) == 40 and info["dirty"] is False
    (repo / "my_method.py").write_text("x = 3\n")  # new code changes the numbers
    assert prov.git_info(repo)["dirty"] is True
    (repo / "my_method.py").unlink()
    (repo / "code.py").write_text("x = 2\n")
    assert prov.git_info(repo)["dirty"] is True


@pytest.mark.slow  # starts a browser
def test_the_pipeline_report_in_chromium(tmp_path: Path) -> None:
    """The page ``write_report`` builds from a results folder: the browser shows each leaderboard
    with one row per run, in order, with the numbers of the CSV."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium/Chrome found on PATH; .ci/run installs Debian's chromium with apt-get")
    import csv

    from report.fake_results import DATASET, METHODS, write_results

    from benchmark.config import ReportConfig
    from benchmark.report.build import write_report

    results = tmp_path / "results"
    write_results(results)
    config = ReportConfig(reference="sgma-complete", bootstrap_samples=50)
    write_report(results, [DATASET], list(METHODS), [0, 1], config, prepared_root=tmp_path / "none")
    dom = _run_browser(binary, tmp_path / "profile", "--dump-dom", (results / "report.html").resolve().as_uri())
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    reader = read_page(dom.stdout.decode("utf-8"))
    board = reader.tables[f"{DATASET}-leaderboard"]
    assert [row[0][0] for row in board["rows"]] == list(METHODS)
    with (results / DATASET / "leaderboard.csv").open(newline="") as f:
        expected = list(csv.DictReader(f))
    column = board["head"].index("Avg")
    for row, line in zip(board["rows"], expected):
        assert row[column][0].split(" ± ")[0] == f"{float(line['avg']):.2f}"
    overview = reader.tables["leaderboard-leaderboard"]
    assert [row[0][0] for row in overview["rows"]] == list(METHODS)
    assert {f"{DATASET}-{name}" for name in ("fragility", "per_class", "efficiency", "comparison")} <= set(
        reader.tables
    )
    assert any(image["alt"].startswith("mIoU (%) per run") for image in reader.images)
