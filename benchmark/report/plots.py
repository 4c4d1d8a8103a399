"""Figures of the report: matplotlib only (Agg), colour-blind safe palettes, deterministic bytes.

Every builder returns a :class:`matplotlib.figure.Figure` that is not registered with pyplot (no
global state, nothing leaks if the caller drops it); :func:`figure_bytes` turns it into PNG and SVG
bytes that are identical for identical content. Methods are coloured with the Okabe-Ito palette
(:func:`method_styles`, markers, hatches and line styles tell them apart beyond eight methods),
continuous values use viridis, classes a qualitative palette (:data:`DEFAULT_CLASS_PALETTE` when the
data set brings none). mIoU values are percent (0..100); NaN means "no value" and is shown as such.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize, to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from benchmark.metrics import NOT_SCORED  # noqa: E402
from benchmark.protocol import subset_parts

OKABE_ITO: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
"""Okabe & Ito (2008) colour-blind safe qualitative palette, one colour per method."""

# Seven markers: 7 and 8 are coprime, so (colour, marker) pairs repeat only after 56 methods.
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
# Hatches and line styles change with each further block of eight methods.
_HATCHES: tuple[str, ...] = ("", "//", "..", "xx", "\\\\", "++", "oo")
_LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")

DEFAULT_CLASS_PALETTE: tuple[str, ...] = (
    # Okabe-Ito without black (black marks ignored pixels) ...
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    # ... then the distinct colours of Paul Tol's colour-blind safe "muted" scheme.
    "#332288",
    "#882255",
    "#44AA99",
    "#999933",
    "#117733",
    "#AA4499",
    "#DDCC77",
)
"""Colour-blind friendly qualitative class colours (14) for data sets without their own."""

DPI = 120
SVG_HASHSALT = "benchmark-report"  # fixed salt for the ids matplotlib writes into SVG files
NODATA_GREY = (0.5, 0.5, 0.5)  # nodata pixels of an input image
MISSING_GREY = "lightgrey"  # cells without a value (NaN)
_VIRIDIS = plt.get_cmap("viridis").with_extremes(bad=MISSING_GREY)


def method_styles(methods: Sequence[str]) -> dict[str, dict]:
    """``{method: {"color", "marker", "hatch", "linestyle"}}``, fixed by the method's position.

    Colour ``i % 8`` of :data:`OKABE_ITO`, marker ``i % 7``; the hatch and the line style change
    every eight methods, so the combination is distinct for the first 56 methods. The same list
    always gives the same styles. Duplicate names raise ``ValueError``.
    """
    if len(set(methods)) != len(methods):
        raise ValueError(f"duplicate method names in {list(methods)!r}")
    return {
        m: {
            "color": OKABE_ITO[i % len(OKABE_ITO)],
            "marker": _MARKERS[i % len(_MARKERS)],
            "hatch": _HATCHES[(i // len(OKABE_ITO)) % len(_HATCHES)],
            "linestyle": _LINESTYLES[(i // len(OKABE_ITO)) % len(_LINESTYLES)],
        }
        for i, m in enumerate(methods)
    }


def figure_bytes(fig: Figure, dpi: int = DPI) -> dict[str, bytes]:
    """``{"png": ..., "svg": ...}`` of ``fig`` (PNG at ``dpi``), then close ``fig`` (also on error).

    The bytes carry no date or software version and SVG ids come from a fixed salt, so the same
    figure content gives identical bytes on every call.
    """
    try:
        out = {}
        with matplotlib.rc_context({"svg.hashsalt": SVG_HASHSALT}):
            for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
                buf = io.BytesIO()
                fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
                out[fmt] = buf.getvalue()
                # keep the layout the first save computed: constrained layout over dozens of axes
                # costs seconds per save, and both files should show the same arrangement
                fig.set_layout_engine("none")
        return out
    finally:
        plt.close(fig)


def _dark(rgb: Sequence[float]) -> bool:
    """Whether text on background ``rgb`` (0..1) should be white (relative luminance < 0.5)."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.5


def _text_colour(rgb: Sequence[float]) -> str:
    return "white" if _dark(rgb) else "black"


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(array, dtype=float)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    return array


def miou_heatmap(methods: list[str], columns: list[str], values: np.ndarray, title: str) -> Figure:
    """Methods (rows) x columns heatmap of ``values`` float[len(methods), len(columns)] (mIoU, %).

    Cells are annotated with one decimal; NaN cells are light grey with "n/a". The viridis scale
    spans the finite values (the annotations carry the numbers). A trailing column titled "Avg"
    is set apart by a white line. Colourbar "mIoU (%)".
    """
    values = _check_shape("values", values, (len(methods), len(columns)))
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    label_len = max((len(c) for c in columns), default=0)
    fig = Figure(
        figsize=(2.8 + 0.9 * len(columns) + 0.07 * max((len(m) for m in methods), default=0), 1.8 + 0.5 * len(methods)),
        layout="constrained",
    )
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=_VIRIDIS, vmin=lo, vmax=hi, aspect="auto")
    if len(columns) > 1 and columns[-1].strip().lower() == "avg":
        ax.axvline(len(columns) - 1.5, color="white", linewidth=3)
    for i in range(len(methods)):
        for j in range(len(columns)):
            v = values[i, j]
            bg = _VIRIDIS((v - lo) / (hi - lo)) if math.isfinite(v) else to_rgb(MISSING_GREY)
            ax.text(
                j,
                i,
                f"{v:.1f}" if math.isfinite(v) else "n/a",
                ha="center",
                va="center",
                fontsize=9,
                color=_text_colour(bg),
            )
    ax.set_xticks(
        range(len(columns)), columns, rotation=35 if label_len > 4 else 0, ha="right" if label_len > 4 else "center"
    )
    ax.set_yticks(range(len(methods)), methods)
    ax.set_xlabel("available modalities")
    ax.set_ylabel("run (method-protocol)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="mIoU (%)", fraction=0.04, pad=0.02)
    return fig


def _error_bars(ax, x: np.ndarray, means: np.ndarray, stds: np.ndarray, **style) -> None:
    """Error bars ``means ± stds`` where both are finite (a NaN std draws none)."""
    has_err = np.isfinite(means) & np.isfinite(stds)
    if has_err.any():
        ax.errorbar(x[has_err], means[has_err], yerr=stds[has_err], fmt="none", **style)


def _bar_groups(ax, series: list[str], columns: list[str], means: np.ndarray, stds: np.ndarray) -> None:
    """One group of bars per column, one bar per series (``means``, ``stds``: float[series, columns]),
    each annotated with its value; y from 0."""
    styles = method_styles(series)
    n = max(len(series), 1)
    width = 0.8 / n
    groups = np.arange(len(columns), dtype=float)
    for i, name in enumerate(series):
        style = styles[name]
        x = groups + (i - (n - 1) / 2) * width
        ax.bar(
            x,
            means[i],
            width,
            label=name,
            color=style["color"],
            hatch=style["hatch"],
            edgecolor=_text_colour(to_rgb(style["color"])),  # hatches follow it: visible on any colour
            linewidth=0.4,
        )
        _error_bars(ax, x, means[i], stds[i], ecolor="black", elinewidth=0.9, capsize=2)
        colour = _text_colour(to_rgb(style["color"]))
        box = (
            {"facecolor": style["color"], "edgecolor": "none", "pad": 0.8} if style["hatch"] else None
        )  # over hatching
        for xj, v in zip(x, means[i]):
            if math.isfinite(v):
                ax.text(
                    xj, v / 2, f"{v:.1f}", ha="center", va="center", rotation=90, fontsize=7, color=colour, bbox=box
                )
            else:
                ax.text(xj, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color="dimgrey")
    tops = means + np.where(np.isfinite(stds), stds, 0.0)
    top = float(np.nanmax(tops)) if np.isfinite(tops).any() else 1.0
    ax.set_ylim(0.0, max(top, 1e-6) * 1.08)
    ax.set_xticks(groups, columns, rotation=35 if max((len(c) for c in columns), default=0) > 4 else 0, ha="right")
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def grouped_bars(
    methods: list[str],
    columns: list[str],
    means: np.ndarray,
    stds: np.ndarray,
    title: str,
    ylabel: str = "mIoU (%)",
) -> Figure:
    """Grouped bar chart: one group per column, one bar per method, error bars = ``stds``.

    ``means`` and ``stds`` are float[len(methods), len(columns)]. The y axis starts at 0 (honest
    bar lengths); as differences between methods are often small, every bar is annotated with its
    value (one decimal). A NaN mean draws no bar and an "n/a" mark; a NaN std draws no error bar.
    The legend sits below the axes.
    """
    shape = (len(methods), len(columns))
    means = _check_shape("means", means, shape)
    stds = _check_shape("stds", stds, shape)
    n = max(len(methods), 1)
    fig = Figure(figsize=(max(6.0, 1.2 + len(columns) * (0.28 * n + 0.35)), 4.6), layout="constrained")
    ax = fig.subplots()
    _bar_groups(ax, methods, columns, means, stds)
    ax.set_xlabel("available modalities")
    ax.set_ylabel(ylabel)
    fig.suptitle(title)
    fig.legend(loc="outside lower center", ncols=min(n, 6), frameon=False)
    return fig


def protocol_bars(
    methods: list[str],
    protocols: list[str],
    panels: dict[str, tuple[np.ndarray, np.ndarray]],
    title: str,
) -> Figure:
    """One panel per entry of ``panels`` (e.g. ``{"Avg": (means, stds), "Last-1": ...}``, each
    float[len(protocols), len(methods)]): per method a group of bars, one per training protocol,
    error bars = std over seeds; a method not run under a protocol shows "n/a"."""
    shape = (len(protocols), len(methods))
    n = max(len(protocols), 1)
    width = max(6.0, 1.2 + len(methods) * (0.28 * n + 0.35))
    fig = Figure(figsize=(width, 3.6 * len(panels) + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (name, (means, stds)) in zip(axes, panels.items()):
        _bar_groups(ax, protocols, methods, _check_shape(name, means, shape), _check_shape(name, stds, shape))
        ax.set_ylabel(f"{name} mIoU (%)")
    axes[-1].set_xlabel("method")
    fig.suptitle(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(n, 6), frameon=False, title="training protocol")
    return fig


def _dodge(n: int, span: float = 0.24) -> np.ndarray:
    """x offsets of ``n`` series spread over ``span`` (centred on 0)."""
    if n <= 1:
        return np.zeros(max(n, 0))
    return np.linspace(-span / 2, span / 2, n)


def fragility_plot(
    methods: list[str],
    sizes: list[int],
    means: np.ndarray,
    stds: np.ndarray,
    title: str,
    points: dict[str, list[tuple[int, float]]] | None = None,
) -> Figure:
    """mIoU (%) against the number of available modalities, one line per method.

    ``means``/``stds`` float[len(methods), len(sizes)]: mean (and spread) of the mIoU over the
    subsets of each size. Each method's line is shifted by a small fixed x offset (at most
    +-0.12) so error bars do not overlap; ``points`` (method -> [(size, mIoU)]) adds the single
    subsets as small translucent dots, spread evenly (deterministically) around the line's x.
    """
    shape = (len(methods), len(sizes))
    means = _check_shape("means", means, shape)
    stds = _check_shape("stds", stds, shape)
    styles = method_styles(methods)
    offsets = _dodge(len(methods))
    fig = Figure(figsize=(7.6, 4.4), layout="constrained")
    ax = fig.subplots()
    xs = np.asarray(sizes, dtype=float)
    for i, method in enumerate(methods):
        style = styles[method]
        x = xs + offsets[i]
        ax.plot(
            x,
            means[i],
            marker=style["marker"],
            linestyle=style["linestyle"],
            color=style["color"],
            label=method,
            markersize=6,
            linewidth=1.6,
            zorder=3,
        )
        _error_bars(ax, x, means[i], stds[i], ecolor=style["color"], capsize=3, zorder=2)
        pts = (points or {}).get(method, [])
        if pts:
            px, py = [], []
            by_size: dict[int, list[float]] = {}
            for size, v in pts:
                by_size.setdefault(int(size), []).append(float(v))
            for size, vs in by_size.items():
                px.extend(size + offsets[i] + _dodge(len(vs), span=0.05))
                py.extend(vs)
            ax.scatter(px, py, s=12, color=style["color"], marker=style["marker"], alpha=0.35, linewidths=0, zorder=1)
    handles, labels = ax.get_legend_handles_labels()
    if points:
        handles.append(Line2D([], [], linestyle="none", marker="o", color="grey", alpha=0.5, markersize=4))
        labels.append("single subsets")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("number of available modalities")
    ax.set_ylabel("mIoU (%), mean over subsets of that size")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="run")
    return fig


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start), NaN-aware: float[T].

    ``out[t] = nanmean(values[max(0, t - window + 1) : t + 1])`` (NaN when all of them are NaN).
    """
    values = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    finite = np.isfinite(values)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    t = np.arange(values.size)
    start = np.maximum(0, t - window + 1)
    total = csum[t + 1] - csum[start]
    count = ccount[t + 1] - ccount[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _smoothing_window(length: int) -> int:
    return max(1, length // 25)


def training_curves(logs: dict[str, dict[int, dict[str, np.ndarray]]], title: str) -> Figure:
    """Training loss and throughput against the step: method -> seed -> {"step", "loss", "images_per_s"}.

    Left: every seed's raw loss (faint) and its moving average (:func:`moving_average`, window
    ``max(1, T // 25)``) in the method's colour. Right: the moving average of images / s. Lines
    carry gids ``"<method>/seed<k>/loss_raw"``, ``".../loss_ma"`` and ``".../images_per_s_ma"``.
    """
    styles = method_styles(list(logs))
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_loss, ax_speed = fig.subplots(1, 2)
    for method, seeds in logs.items():
        style = styles[method]
        for seed, log in seeds.items():
            step = np.asarray(log["step"], dtype=float)
            for key in ("loss", "images_per_s"):
                if key in log and np.shape(log[key]) != step.shape:
                    raise ValueError(f"{method} seed {seed}: {key} has shape {np.shape(log[key])}, step {step.shape}")
            if step.size == 0:
                continue
            window = _smoothing_window(step.size)
            kw = {"color": style["color"], "linestyle": style["linestyle"]}
            loss = np.asarray(log["loss"], dtype=float)
            ax_loss.plot(step, loss, alpha=0.25, linewidth=0.7, gid=f"{method}/seed{seed}/loss_raw", **kw)
            ax_loss.plot(step, moving_average(loss, window), linewidth=1.8, gid=f"{method}/seed{seed}/loss_ma", **kw)
            if "images_per_s" in log:
                speed = moving_average(np.asarray(log["images_per_s"], dtype=float), window)
                ax_speed.plot(step, speed, linewidth=1.6, gid=f"{method}/seed{seed}/images_per_s_ma", **kw)
    ax_loss.set_title("training loss (faint: raw, bold: moving average)", fontsize=10)
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("loss")
    ax_speed.set_title("training throughput (moving average)", fontsize=10)
    ax_speed.set_xlabel("training step")
    ax_speed.set_ylabel("images / s")
    ax_speed.set_ylim(bottom=0.0)
    for ax in (ax_loss, ax_speed):
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=s["color"], linestyle=s["linestyle"], linewidth=1.8, label=m) for m, s in styles.items()
    ]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", title="run", fontsize=9)
    fig.suptitle(title)
    return fig


def _class_colours(palette: Sequence[str], num_classes: int) -> np.ndarray:
    if len(palette) < num_classes:
        raise ValueError(f"palette has {len(palette)} colours for {num_classes} classes")
    return np.array([to_rgb(c) for c in palette[:num_classes]], dtype=float)


def _colourise(classes: np.ndarray, colours: np.ndarray, ignore_index: int | None, what: str) -> np.ndarray:
    """float[H, W, 3] RGB of class map ``classes`` int[H, W]; ``ignore_index`` pixels black."""
    classes = np.asarray(classes).astype(np.int64)
    ignored = classes == ignore_index if ignore_index is not None else np.zeros(classes.shape, bool)
    bad = ~ignored & ((classes < 0) | (classes >= len(colours)))
    if bad.any():
        raise ValueError(f"{what}: class ids {sorted(set(classes[bad].tolist()))[:5]} outside 0..{len(colours) - 1}")
    rgb = colours[np.where(ignored, 0, classes)]
    rgb[ignored] = 0.0
    return rgb


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def qualitative_panel(
    images: dict[str, np.ndarray],
    label: np.ndarray,
    predictions: dict[str, np.ndarray],
    subsets: list[str],
    classes: list[str],
    palette: Sequence[str],
    ignore_index: int,
    title: str,
) -> Figure:
    """Inputs, ground truth and every method's prediction per subset for one test tile.

    ``images``: modality -> float[H, W, 3] (RGB) or [H, W] (one band, viridis) in [0, 1], NaN =
    nodata (mid-grey). ``label`` int[H, W] (``ignore_index`` black); ``predictions``: method ->
    uint8[S, H, W] in ``subsets`` order. Row 0: the modalities and the ground truth; then one row
    per method, one column per subset. Class colours from ``palette`` (hex, one per class); the
    legend at the bottom lists the classes and "ignored". Axes are labelled (``Axes.get_label``)
    ``"input:<modality>"``, ``"ground truth"`` and ``"pred:<method>:<subset>"``.
    A prediction of only ``NOT_SCORED`` (a subset the method cannot use) is drawn as an "n/a" cell.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be [H, W], got shape {label.shape}")
    colours = _class_colours(palette, len(classes))
    for method, pred in predictions.items():
        if np.shape(pred) != (len(subsets), *label.shape):
            raise ValueError(
                f"predictions[{method!r}] has shape {np.shape(pred)}, expected {(len(subsets), *label.shape)}"
            )
    num_cols = max(len(images) + 1, len(subsets), 1)
    num_rows = 1 + len(predictions)
    cell = max(1.1, min(2.0, 16.0 / num_cols))
    fig = Figure(figsize=(0.6 + cell * num_cols, 1.0 + (cell + 0.3) * num_rows), layout="constrained")
    axes = fig.subplots(num_rows, num_cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    grey = plt.get_cmap("viridis").with_extremes(bad=NODATA_GREY)
    for j, (modality, image) in enumerate(images.items()):
        ax = axes[0, j]
        ax.axis("on")
        _blank(ax)
        image = np.asarray(image, dtype=float)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 3:
            if image.shape[-1] != 3:
                raise ValueError(f"images[{modality!r}] must be [H, W, 3] or [H, W], got {image.shape}")
            rgb = np.clip(image, 0.0, 1.0)
            rgb[~np.isfinite(image).all(axis=-1)] = NODATA_GREY
            ax.imshow(rgb, interpolation="nearest")
        elif image.ndim == 2:
            ax.imshow(np.ma.masked_invalid(image), cmap=grey, vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            raise ValueError(f"images[{modality!r}] must be [H, W, 3] or [H, W], got {image.shape}")
        ax.set_title(modality, fontsize=9)
        ax.set_label(f"input:{modality}")
    ax = axes[0, len(images)]
    ax.axis("on")
    _blank(ax)
    ax.imshow(_colourise(label, colours, ignore_index, "label"), interpolation="nearest")
    ax.set_title("ground truth", fontsize=9, fontweight="bold")
    ax.set_label("ground truth")
    axes[0, 0].set_ylabel("input", fontsize=9)
    for i, (method, pred) in enumerate(predictions.items(), start=1):
        for j, subset in enumerate(subsets):
            ax = axes[i, j]
            ax.axis("on")
            _blank(ax)
            if np.all(pred[j] == NOT_SCORED):  # a subset the method cannot use
                _absent_cell(ax, "n/a", aspect=label.shape[0] / label.shape[1])
            else:
                ax.imshow(_colourise(pred[j], colours, None, f"{method} {subset}"), interpolation="nearest")
            ax.set_title(subset, fontsize=8)
            ax.set_label(f"pred:{method}:{subset}")
        axes[i, 0].set_ylabel(method, fontsize=9, fontweight="bold")
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=n) for c, n in zip(colours, classes)]
    handles.append(Patch(facecolor="black", edgecolor="black", label="ignored"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), max(2, int(cell * num_cols / 1.6))))
    fig.suptitle(title)
    return fig


def _absent_cell(ax, text: str = "absent", aspect: float | None = None) -> None:
    """Grey hatched cell with ``text``: a modality not in the subset; ``aspect`` = height / width."""
    if aspect is not None:
        ax.set_box_aspect(aspect)
    ax.add_patch(
        Rectangle(
            (0, 0), 1, 1, transform=ax.transAxes, facecolor=MISSING_GREY, edgecolor="grey", hatch="//", linewidth=0
        )
    )
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="black")


def _stride_title(stride: int) -> str:
    return f"1/{stride}"


def robustness_maps(maps: dict[int, np.ndarray], subsets: list[str], modalities: list[str], title: str) -> Figure:
    """Modality robustness weight maps of one tile: stride (px) -> float[S, M, h, w] in [0, 1].

    Rows: subsets; columns: (scale, modality), scales from fine to coarse, titled
    ``"1/<stride> · <modality>"``. viridis on a fixed 0..1 scale with one shared colourbar;
    NaN is light grey. A modality not in the row's subset shows a hatched grey "absent" cell
    instead of its (all-zero) map. Axes are labelled ``"<subset>|<stride>|<modality>"``.
    """
    strides = sorted(maps)
    for s in strides:
        if np.ndim(maps[s]) != 4 or np.shape(maps[s])[:2] != (len(subsets), len(modalities)):
            raise ValueError(
                f"maps[{s}] has shape {np.shape(maps[s])}, expected ({len(subsets)}, {len(modalities)}, h, w)"
            )
    m = len(modalities)
    num_cols = len(strides) * m + max(len(strides) - 1, 0)  # a narrow spacer column between scales
    ratios = []
    for k in range(len(strides)):
        ratios += [1.0] * m + ([0.25] if k < len(strides) - 1 else [])
    cell = max(0.9, min(1.3, 16.0 / max(len(strides) * m, 1)))
    fig = Figure(
        figsize=(1.6 + cell * sum(ratios), 0.9 + (cell + 0.25) * len(subsets)),
        layout="constrained",
    )
    axes = fig.subplots(len(subsets), max(num_cols, 1), squeeze=False, gridspec_kw={"width_ratios": ratios or [1.0]})
    norm = Normalize(0.0, 1.0)
    used = []
    for r, subset in enumerate(subsets):
        present = set(subset_parts(subset))
        for k, stride in enumerate(strides):
            for j, modality in enumerate(modalities):
                ax = axes[r, k * (m + 1) + j]
                used.append(ax)
                _blank(ax)
                ax.set_label(f"{subset}|{stride}|{modality}")
                if modality in present:
                    ax.imshow(
                        np.ma.masked_invalid(np.asarray(maps[stride][r, j], dtype=float)),
                        cmap=_VIRIDIS,
                        norm=norm,
                        interpolation="nearest",
                    )
                else:
                    h, w = np.shape(maps[stride])[2:]
                    _absent_cell(ax, aspect=h / w if w else None)
                if r == 0:
                    ax.set_title(f"{_stride_title(stride)} · {modality}", fontsize=8)
            if k < len(strides) - 1:
                axes[r, k * (m + 1) + m].axis("off")
        axes[r, 0].set_ylabel(subset, fontsize=8)
    if used:
        fig.colorbar(
            ScalarMappable(norm=norm, cmap=_VIRIDIS), ax=used, label="robustness weight r_m", fraction=0.03, shrink=0.6
        )
    fig.suptitle(title)
    fig.supxlabel("feature scale (1/stride) · modality; hatched: modality not available", fontsize=9)
    return fig


def robustness_means(table: dict[str, dict[str, dict[str, list[float]]]], scales: list[int], title: str) -> Figure:
    """Mean robustness per method (rows), subset (columns), modality x scale (panel cells).

    ``table``: method -> subset -> modality -> [mean r_m per scale of ``scales``] (0..1, NaN = no
    value). viridis on a fixed 0..1 scale, values annotated with two decimals; a modality missing
    from the subset (not in ``subset_parts(subset)`` and exactly 0) is grey with a dash, NaN grey
    with "n/a". Axes are labelled ``"<method>|<subset>"``.
    """
    if not table:
        raise ValueError("robustness_means needs at least one method")
    methods = list(table)
    subsets = list(dict.fromkeys(s for m in methods for s in table[m]))
    mods = {m: list(next(iter(table[m].values()), {})) for m in methods}
    num_modalities = max(max((len(v) for v in mods.values()), default=1), 1)
    panel_w, panel_h = 0.55 * len(scales) + 0.5, 0.32 * num_modalities + 0.75
    fig = Figure(
        figsize=(1.8 + panel_w * len(subsets), 0.8 + panel_h * len(methods)),
        layout="constrained",
    )
    axes = fig.subplots(len(methods), max(len(subsets), 1), squeeze=False)
    norm = Normalize(0.0, 1.0)
    for i, method in enumerate(methods):
        modalities = mods[method]
        for j, subset in enumerate(subsets):
            ax = axes[i, j]
            ax.set_label(f"{method}|{subset}")
            values = table[method].get(subset)
            if values is None:
                _blank(ax)
                _absent_cell(ax, "n/a")
                continue
            grid = np.full((len(modalities), len(scales)), np.nan)
            for r, mod in enumerate(modalities):
                row = np.asarray(values[mod], dtype=float)
                if row.shape != (len(scales),):
                    raise ValueError(f"{method} {subset} {mod}: {row.size} values for {len(scales)} scales")
                grid[r] = row
            present = set(subset_parts(subset))
            missing = np.array([[mod not in present] for mod in modalities]) & (grid == 0.0)
            shown = np.where(missing, np.nan, grid)
            ax.imshow(np.ma.masked_invalid(shown), cmap=_VIRIDIS, norm=norm, aspect="auto")
            for r in range(len(modalities)):
                for c in range(len(scales)):
                    v = shown[r, c]
                    bg = _VIRIDIS(v) if math.isfinite(v) else to_rgb(MISSING_GREY)
                    text = "–" if missing[r, c] else f"{v:.2f}" if math.isfinite(v) else "n/a"
                    ax.text(c, r, text, ha="center", va="center", fontsize=8, color=_text_colour(bg))
            ax.set_xticks(range(len(scales)), [_stride_title(s) for s in scales], fontsize=8)
            ax.set_yticks(range(len(modalities)), modalities, fontsize=8)
            if j:
                ax.tick_params(labelleft=False)
            if i == 0:
                ax.set_title(subset, fontsize=9)
        axes[i, 0].set_ylabel(method, fontweight="bold")
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=_VIRIDIS), ax=axes, label="mean robustness r_m", fraction=0.03, pad=0.01
    )
    fig.supxlabel("feature scale (1/stride)", fontsize=9)
    fig.suptitle(title)
    return fig


SCENARIO_MEAN_COLUMN = "mean"


def _corrupted_columns(layout: dict[str, tuple[list[float], list[str]]], modalities: Sequence[str]) -> list[str]:
    """The modalities some kind of ``layout`` (kind -> (levels, corrupted modalities)) corrupts,
    in the order of ``modalities``; ``ValueError`` for one that is not among them."""
    columns = [m for m in modalities if any(m in mods for _, mods in layout.values())]
    stray = sorted({m for _, mods in layout.values() for m in mods} - set(columns))
    if stray:
        raise ValueError(f"layout corrupts {stray}, not among the modalities {list(modalities)}")
    return columns


def _level_lines(
    ax,
    xs: np.ndarray,
    series: dict[str, tuple[np.ndarray, np.ndarray]],
    styles: dict[str, dict],
    gid: str,
) -> list[np.ndarray]:
    """One line per method of ``series`` (method -> (float[X] means, float[X] stds) at ``xs``),
    shifted by a small fixed x offset per method (at most 2 % of the largest x each way), with
    error bars; gids ``"<method>|<gid>"``. Returns the extents (means -+ stds, NaN std as 0)."""
    spread = _dodge(len(series)) * (0.04 / 0.24) * float(xs.max())  # _dodge spans 0.24
    extent = []
    for i, (method, (mean, std)) in enumerate(series.items()):
        y = _check_shape(f"{method} {gid} means", mean, xs.shape)
        err = _check_shape(f"{method} {gid} stds", std, xs.shape)
        style = styles[method]
        ax.plot(
            xs + spread[i],
            y,
            marker=style["marker"],
            linestyle=style["linestyle"],
            color=style["color"],
            markersize=5,
            linewidth=1.5,
            gid=f"{method}|{gid}",
            zorder=3,
        )
        _error_bars(ax, xs + spread[i], y, err, ecolor=style["color"], capsize=2, zorder=2)
        extent += [y - np.where(np.isfinite(err), err, 0.0), y + np.where(np.isfinite(err), err, 0.0)]
    ax.set_xticks(xs, [f"{v:g}" for v in xs])
    ax.grid(alpha=0.3)
    return extent


def _run_legend(fig: Figure, styles: dict[str, dict]) -> None:
    handles = [
        Line2D([], [], color=s["color"], linestyle=s["linestyle"], marker=s["marker"], label=m)
        for m, s in styles.items()
    ]
    fig.legend(handles=handles, loc="outside right upper", title="run", fontsize=9)


def scenario_curves(
    means: dict[str, dict],
    layout: dict[str, tuple[list[float], list[str]]],
    modalities: Sequence[str],
    title: str,
    units: dict[str, str] | None = None,
) -> Figure:
    """mIoU (%) against the corruption level: one row of panels per kind, one column per corrupted
    modality and a last column ``"mean"`` (mean over the kind's corrupted modalities).

    ``means``: method -> ``{"clean": (mean, std), "kinds": {kind: {modality | "mean": (float[L]
    means, float[L] stds)}}}`` (:func:`benchmark.report.leaderboard.scenario_means`); ``layout``:
    kind -> (levels, corrupted modalities); ``modalities``: the data set's, giving the column order.
    Each line starts at x = 0 with the clean (uncorrupted, full set) mIoU, then one point per level;
    error bars = std over seeds; lines are shifted by a small fixed x offset per method (at most
    2 % of the row's largest level each way). Every panel of a row has the same y range. A modality
    the kind does not corrupt shows a hatched "not corrupted" cell. ``units``: kind -> x axis label.
    Axes are labelled ``"<kind>|<modality or mean>"``, lines carry gids ``"<method>|<kind>|<column>"``.
    """
    if not means or not layout:
        raise ValueError("scenario_curves needs at least one method and one kind")
    styles = method_styles(list(means))
    columns = [*_corrupted_columns(layout, modalities), SCENARIO_MEAN_COLUMN]
    kinds = list(layout)
    fig = Figure(figsize=(1.6 + 3.1 * len(columns), 0.9 + 2.7 * len(kinds)), layout="constrained")
    axes = fig.subplots(len(kinds), len(columns), squeeze=False)
    for r, kind in enumerate(kinds):
        levels, corrupted = layout[kind]
        xs = np.array([0.0, *levels], dtype=float)
        drawn, extent = [], []
        for c, column in enumerate(columns):
            ax = axes[r, c]
            ax.set_label(f"{kind}|{column}")
            if column != SCENARIO_MEAN_COLUMN and column not in corrupted:
                _blank(ax)
                _absent_cell(ax, "not corrupted")
                continue
            drawn.append(ax)
            series = {}
            for method, entry in means.items():
                clean_mean, clean_std = entry["clean"]
                mean, std = entry["kinds"][kind][column]
                series[method] = (np.r_[clean_mean, mean], np.r_[clean_std, std])
            extent += _level_lines(ax, xs, series, styles, f"{kind}|{column}")
            ax.set_xlabel((units or {}).get(kind, "level"), fontsize=9)
            ax.set_title(f"{kind} · {column}", fontsize=9)
            if len(drawn) > 1:  # y tick labels on the row's first drawn panel only
                ax.tick_params(labelleft=False)
        values = np.concatenate(extent) if extent else np.zeros(0)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
        pad = max(0.05 * (hi - lo), 1.0)
        for ax in drawn:
            ax.set_ylim(lo - pad, hi + pad)  # one y range per row
        axes[r, 0].set_ylabel(f"{kind}\nmIoU (%)")  # on a "not corrupted" cell too: it names the row
    _run_legend(fig, styles)
    fig.supxlabel("corruption level (x = 0: clean, every modality uncorrupted)", fontsize=9)
    fig.suptitle(title)
    return fig


def corrupted_weight_curves(
    weights: dict[str, dict],
    layout: dict[str, tuple[list[float], list[str]]],
    modalities: Sequence[str],
    title: str,
    units: dict[str, str] | None = None,
) -> Figure:
    """The corrupted modality's mean robustness weight r (0..1) against the corruption level: one
    row of panels per kind, one column per corrupted modality, one line per method.

    ``weights``: method -> ``{"kinds": {kind: {modality: (float[1 + L] means, float[1 + L] stds)}}}``
    (:func:`benchmark.report.leaderboard.corrupted_weights`: x = 0 is the clean full-set weight,
    then one point per level of ``layout``, kind -> (levels, corrupted modalities)); error bars =
    std over seeds; lines shifted by a small fixed x offset per method. A kind missing from a
    method's entry draws no line for it. The y axis is 0..1 in every panel; a modality the kind
    does not corrupt shows a hatched "not corrupted" cell. ``units``: kind -> x axis label. Axes
    are labelled ``"<kind>|<modality>"``, lines carry gids ``"<method>|<kind>|<modality>"``.
    """
    if not weights or not layout:
        raise ValueError("corrupted_weight_curves needs at least one method and one kind")
    styles = method_styles(list(weights))
    columns = _corrupted_columns(layout, modalities)
    kinds = list(layout)
    fig = Figure(figsize=(1.6 + 3.1 * len(columns), 0.9 + 2.5 * len(kinds)), layout="constrained")
    axes = fig.subplots(len(kinds), len(columns), squeeze=False)
    for r, kind in enumerate(kinds):
        levels, corrupted = layout[kind]
        for c, column in enumerate(columns):
            ax = axes[r, c]
            ax.set_label(f"{kind}|{column}")
            if column not in corrupted:
                _blank(ax)
                _absent_cell(ax, "not corrupted")
                continue
            series = {m: e["kinds"][kind][column] for m, e in weights.items() if kind in e["kinds"]}
            _level_lines(ax, np.array([0.0, *levels], dtype=float), series, styles, f"{kind}|{column}")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel((units or {}).get(kind, "level"), fontsize=9)
            ax.set_title(f"{kind} · {column} corrupted", fontsize=9)
        axes[r, 0].set_ylabel(f"{kind}\nr of the corrupted modality")
    _run_legend(fig, styles)
    fig.supxlabel("corruption level (x = 0: clean, every modality uncorrupted)", fontsize=9)
    fig.suptitle(title)
    return fig
