"""benchmark.report.plots: figure content read back from the artists, numpy as the oracle."""

from __future__ import annotations

import re
import struct
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb

from benchmark.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METHODS = ["zeta", "alpha-complete", "mid"]  # deliberately not sorted
SUBSETS = ["rgb", "dsm", "rgb+dsm"]
COLUMNS = [*SUBSETS, "Avg"]


def _values(shape: tuple[int, ...], seed: int = 0, lo: float = 20.0, hi: float = 90.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, shape)


def _axes_by_label(fig) -> dict[str, object]:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label()}


def _colourbar_axes(fig, label: str):
    found = [ax for ax in fig.axes if ax.get_ylabel() == label]
    assert len(found) == 1, [ax.get_ylabel() for ax in fig.axes]
    return found[0]


def _error_segments(ax) -> dict[float, tuple[float, float]]:
    """x -> (low, high) of every vertical error bar segment on ``ax``."""
    out = {}
    for coll in ax.collections:
        if isinstance(coll, LineCollection):
            for seg in coll.get_segments():
                (x0, y0), (x1, y1) = seg
                assert x0 == pytest.approx(x1)
                out[round(float(x0), 9)] = (min(y0, y1), max(y0, y1))
    return out


# --- styles and palettes -----------------------------------------------------------------------


def test_method_styles_stable_and_distinct():
    eight = [f"m{i}" for i in range(8)]
    styles = plots.method_styles(eight)
    assert styles == plots.method_styles(list(eight))
    assert list(styles) == eight
    colours = [s["color"] for s in styles.values()]
    assert colours == list(plots.OKABE_ITO)
    assert len({to_rgb(c) for c in colours}) == 8
    assert all(s["hatch"] == "" for s in styles.values())  # hatches only beyond eight methods

    many = [f"m{i}" for i in range(30)]
    big = plots.method_styles(many)
    combos = {(s["color"], s["marker"], s["hatch"], s["linestyle"]) for s in big.values()}
    assert len(combos) == 30
    # beyond eight methods the colours repeat, so bars need a hatch and lines another style
    for i in range(8, 30):
        same_colour = big[f"m{i - 8}"]
        assert (big[f"m{i}"]["hatch"], big[f"m{i}"]["linestyle"]) != (same_colour["hatch"], same_colour["linestyle"])
        assert big[f"m{i}"]["hatch"] != same_colour["hatch"]
    # the style of a method depends only on its position
    assert all(big[m] == styles[m] for m in eight)
    with pytest.raises(ValueError, match="duplicate"):
        plots.method_styles(["a", "b", "a"])


def test_default_class_palette_is_usable():
    rgb = [to_rgb(c) for c in plots.DEFAULT_CLASS_PALETTE]
    assert len(rgb) >= 12
    assert len(set(rgb)) == len(rgb)
    assert (0.0, 0.0, 0.0) not in rgb  # black is reserved for ignored pixels
    assert all(re.fullmatch(r"#[0-9A-Fa-f]{6}", c) for c in plots.DEFAULT_CLASS_PALETTE)


# --- figure_bytes --------------------------------------------------------------------------------


def test_figure_bytes_png_svg_deterministic():
    values = _values((3, 4))
    a = plots.figure_bytes(plots.miou_heatmap(METHODS, COLUMNS, values, "t"))
    b = plots.figure_bytes(plots.miou_heatmap(METHODS, COLUMNS, values.copy(), "t"))
    assert set(a) == {"png", "svg"}
    assert a["png"].startswith(PNG_SIGNATURE)
    assert b"<svg" in a["svg"][:2000]
    assert a["svg"].rstrip().endswith(b"</svg>")
    assert b"dc:date" not in a["svg"]
    assert a == b
    other = values.copy()
    other[0, 0] += 5.0
    c = plots.figure_bytes(plots.miou_heatmap(METHODS, COLUMNS, other, "t"))
    assert c["png"] != a["png"] and c["svg"] != a["svg"]


def test_figure_bytes_png_resolution():
    fig = plots.miou_heatmap(METHODS, COLUMNS, _values((3, 4)), "t")
    fig.set_size_inches(5.0, 3.0)
    png = plots.figure_bytes(fig)["png"]
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert (width, height) == (round(5.0 * plots.DPI), round(3.0 * plots.DPI))


def test_figure_bytes_closes_figure_also_on_error():
    fig = plt.figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    assert fig.number in plt.get_fignums()
    plots.figure_bytes(fig)
    assert fig.number not in plt.get_fignums()

    broken = plt.figure()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    broken.savefig = fail
    with pytest.raises(RuntimeError, match="disk full"):
        plots.figure_bytes(broken)
    assert broken.number not in plt.get_fignums()


# --- heatmap -------------------------------------------------------------------------------------


def test_miou_heatmap_annotations_and_separator():
    values = _values((3, 4))
    values[1, 2] = np.nan
    fig = plots.miou_heatmap(METHODS, COLUMNS, values, "my title")
    ax = fig.axes[0]
    assert ax.get_title() == "my title"
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(texts) == values.size
    for (i, j), text in texts.items():
        if np.isnan(values[i, j]):
            assert text == "n/a"
        else:
            assert float(text) == pytest.approx(np.round(values[i, j], 1), abs=1e-9)
            assert re.fullmatch(r"\d+\.\d", text)
    assert [t.get_text() for t in ax.get_xticklabels()] == COLUMNS
    assert [t.get_text() for t in ax.get_yticklabels()] == METHODS
    image = ax.get_images()[0]
    np.testing.assert_array_equal(np.ma.getmaskarray(image.get_array()), np.isnan(values))
    separators = [line for line in ax.lines if np.allclose(line.get_xdata(), len(COLUMNS) - 1.5)]
    assert len(separators) == 1
    _colourbar_axes(fig, "mIoU (%)")

    plain = plots.miou_heatmap(METHODS, SUBSETS, values[:, :3], "t")
    assert not plain.axes[0].lines  # no "Avg" column, no separator


def test_miou_heatmap_shape_checked():
    with pytest.raises(ValueError, match="shape"):
        plots.miou_heatmap(METHODS, COLUMNS, np.zeros((3, 3)), "t")


# --- grouped bars --------------------------------------------------------------------------------


def test_grouped_bars_heights_and_error_bars():
    means = _values((3, 4), seed=1)
    stds = _values((3, 4), seed=2, lo=0.5, hi=4.0)
    stds[0, 1] = np.nan
    means[2, 3] = np.nan
    fig = plots.grouped_bars(METHODS, COLUMNS, means, stds, "bars")
    ax = fig.axes[0]
    assert len(ax.containers) >= len(METHODS)
    bars = [c for c in ax.containers if hasattr(c, "datavalues")]
    assert len(bars) == len(METHODS)
    segments = _error_segments(ax)
    styles = plots.method_styles(METHODS)
    for i, container in enumerate(bars):
        heights = np.array([p.get_height() for p in container.patches])
        np.testing.assert_allclose(heights, means[i], equal_nan=True)
        assert to_rgb(container.patches[0].get_facecolor()) == to_rgb(styles[METHODS[i]]["color"])
        for j, patch in enumerate(container.patches):
            x = round(patch.get_x() + patch.get_width() / 2, 9)
            if np.isnan(stds[i, j]) or np.isnan(means[i, j]):
                assert x not in segments
            else:
                low, high = segments[x]
                assert high - low == pytest.approx(2 * stds[i, j])
                assert (high + low) / 2 == pytest.approx(means[i, j])
    # groups: one per column, in order
    assert [t.get_text() for t in ax.get_xticklabels()] == COLUMNS
    assert ax.get_ylim()[0] == 0.0
    assert ax.get_ylim()[1] >= np.nanmax(means + np.nan_to_num(stds))
    assert ax.get_ylabel() == "mIoU (%)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == METHODS
    assert "n/a" in [t.get_text() for t in ax.texts]


# --- fragility -----------------------------------------------------------------------------------


def test_fragility_plot_lines_error_bars_and_points():
    sizes = [1, 2, 3]
    means = _values((3, 3), seed=3)
    stds = _values((3, 3), seed=4, lo=0.1, hi=3.0)
    stds[1, 0] = np.nan
    points = {"zeta": [(1, 40.0), (1, 44.0), (2, 55.5), (3, 61.0)], "mid": [(2, 70.0)]}
    fig = plots.fragility_plot(METHODS, sizes, means, stds, "frag", points=points)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    segments = _error_segments(ax)
    for i, method in enumerate(METHODS):
        line = lines[method]
        np.testing.assert_allclose(line.get_ydata(), means[i])
        offset = np.asarray(line.get_xdata()) - np.asarray(sizes)
        assert np.ptp(offset) == pytest.approx(0.0, abs=1e-12)
        assert abs(offset[0]) <= 0.15
        for k, x in enumerate(line.get_xdata()):
            key = round(float(x), 9)
            if np.isnan(stds[i, k]):
                assert key not in segments
            else:
                assert segments[key][1] - segments[key][0] == pytest.approx(2 * stds[i, k])
    assert list(ax.get_xticks()) == sizes
    assert ax.get_xlabel() == "number of available modalities"
    scattered = sorted(
        float(y) for coll in ax.collections if not isinstance(coll, LineCollection) for _, y in coll.get_offsets()
    )
    assert scattered == sorted(v for pts in points.values() for _, v in pts)
    xs = [float(x) for coll in ax.collections if not isinstance(coll, LineCollection) for x, _ in coll.get_offsets()]
    assert all(min(abs(x - s) for s in sizes) < 0.2 for x in xs)
    assert [t.get_text() for t in fig.legends[0].get_texts()][: len(METHODS)] == METHODS


# --- training curves -----------------------------------------------------------------------------


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    return np.array([np.nanmean(values[max(0, t - window + 1) : t + 1]) for t in range(len(values))])


def test_training_curves_moving_average():
    rng = np.random.default_rng(5)
    lengths = {("zeta", 0): 103, ("zeta", 1): 103, ("alpha-complete", 0): 60}
    logs: dict = {}
    for (method, seed), length in lengths.items():
        logs.setdefault(method, {})[seed] = {
            "step": np.arange(length) * 2,
            "loss": rng.uniform(0.5, 2.0, length),
            "images_per_s": rng.uniform(10, 30, length),
        }
    fig = plots.training_curves(logs, "train")
    ax_loss, ax_speed = fig.axes[:2]
    by_gid = {line.get_gid(): line for ax in (ax_loss, ax_speed) for line in ax.get_lines()}
    styles = plots.method_styles(list(logs))
    for (method, seed), length in lengths.items():
        log = logs[method][seed]
        window = max(1, length // 25)
        ma = by_gid[f"{method}/seed{seed}/loss_ma"]
        np.testing.assert_allclose(ma.get_xdata(), log["step"])
        np.testing.assert_allclose(ma.get_ydata(), _trailing_mean(log["loss"], window))
        # the full windows agree with a plain convolution
        full = np.convolve(log["loss"], np.ones(window) / window, mode="valid")
        np.testing.assert_allclose(np.asarray(ma.get_ydata())[window - 1 :], full)
        np.testing.assert_allclose(by_gid[f"{method}/seed{seed}/loss_raw"].get_ydata(), log["loss"])
        speed = by_gid[f"{method}/seed{seed}/images_per_s_ma"]
        np.testing.assert_allclose(speed.get_ydata(), _trailing_mean(log["images_per_s"], window))
        assert to_rgb(ma.get_color()) == to_rgb(styles[method]["color"])
        assert by_gid[f"{method}/seed{seed}/loss_raw"].get_alpha() < 1
    assert ax_speed.get_ylabel() == "images / s"
    assert ax_loss.get_xlabel() == ax_speed.get_xlabel() == "training step"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(logs)


def test_moving_average_nan_aware():
    values = np.array([1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 8.0, 2.0])
    for window in (1, 2, 3, 5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN window
            expected = _trailing_mean(values, window)
        assert np.isnan(expected).any() == (window < 4)
        np.testing.assert_allclose(plots.moving_average(values, window), expected, equal_nan=True)
    with pytest.raises(ValueError):
        plots.moving_average(values, 0)


# --- qualitative panel ---------------------------------------------------------------------------


def _qualitative_inputs():
    rng = np.random.default_rng(6)
    h, w, k, ignore = 6, 7, 4, 255
    images = {"rgb": rng.uniform(0, 1, (h, w, 3)), "dsm": rng.uniform(0, 1, (h, w))}
    images["rgb"][0, 0, 1] = np.nan
    images["dsm"][1, 2] = np.nan
    label = rng.integers(0, k, (h, w))
    label[-1, :] = ignore
    preds = {m: rng.integers(0, k, (len(SUBSETS), h, w)).astype(np.uint8) for m in METHODS[:2]}
    classes = ["road", "building", "tree", "car"]
    palette = ["#112233", "#aa5500", "#00cc66", "#7f00ff"]
    return images, label, preds, classes, palette, ignore


def test_qualitative_panel_colours_layout_and_legend():
    images, label, preds, classes, palette, ignore = _qualitative_inputs()
    fig = plots.qualitative_panel(images, label, preds, SUBSETS, classes, palette, ignore, "tile 3")
    axes = _axes_by_label(fig)
    colours = np.array([to_rgb(c) for c in palette])

    gt = np.asarray(axes["ground truth"].get_images()[0].get_array())
    expected = np.where((label == ignore)[..., None], 0.0, colours[np.where(label == ignore, 0, label)])
    np.testing.assert_allclose(gt[..., :3], expected)
    assert np.all(gt[label == ignore][:, :3] == 0.0)

    for method, pred in preds.items():
        for s, subset in enumerate(SUBSETS):
            ax = axes[f"pred:{method}:{subset}"]
            rgb = np.asarray(ax.get_images()[0].get_array())[..., :3]
            for cls in range(len(classes)):
                hit = pred[s] == cls
                np.testing.assert_allclose(rgb[hit], np.broadcast_to(colours[cls], rgb[hit].shape))
            assert ax.get_title() == subset
            assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
        assert axes[f"pred:{method}:{SUBSETS[0]}"].get_ylabel() == method

    rgb_in = np.asarray(axes["input:rgb"].get_images()[0].get_array())
    np.testing.assert_allclose(rgb_in[0, 0, :3], plots.NODATA_GREY)
    np.testing.assert_allclose(rgb_in[1:, :, :3], images["rgb"][1:])
    dsm = axes["input:dsm"].get_images()[0]
    rgba = dsm.to_rgba(dsm.get_array())  # float RGBA through the image's cmap and norm
    np.testing.assert_allclose(rgba[1, 2, :3], plots.NODATA_GREY)
    np.testing.assert_allclose(rgba[0, 0], plt.get_cmap("viridis")(images["dsm"][0, 0]))  # one band: viridis 0..1
    assert axes["input:rgb"].get_title() == "rgb"
    assert axes["ground truth"].get_title() == "ground truth"

    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [*classes, "ignored"]
    handles = legend.legend_handles
    assert [to_rgb(h.get_facecolor()) for h in handles] == [*map(tuple, colours), (0.0, 0.0, 0.0)]
    assert fig.get_suptitle() == "tile 3"


def test_qualitative_panel_rejects_bad_input():
    images, label, preds, classes, palette, ignore = _qualitative_inputs()
    with pytest.raises(ValueError, match="palette"):
        plots.qualitative_panel(images, label, preds, SUBSETS, classes, palette[:3], ignore, "t")
    bad = {m: p.copy() for m, p in preds.items()}
    bad["zeta"][0, 0, 0] = len(classes)
    with pytest.raises(ValueError, match="outside"):
        plots.qualitative_panel(images, label, bad, SUBSETS, classes, palette, ignore, "t")
    with pytest.raises(ValueError, match="shape"):
        plots.qualitative_panel(images, label, {"zeta": preds["zeta"][:2]}, SUBSETS, classes, palette, ignore, "t")


# --- robustness ----------------------------------------------------------------------------------


def test_robustness_maps_absent_cells_and_colour_limits():
    modalities = ["rgb", "dsm"]
    rng = np.random.default_rng(7)
    maps = {16: rng.uniform(0, 1, (3, 2, 2, 3)), 8: rng.uniform(0, 1, (3, 2, 4, 6))}
    maps[8][2, 1] = 0.0  # a present modality with an all-zero map is still a map
    maps[16][0, 1] = 0.5  # an absent modality is absent whatever its values
    fig = plots.robustness_maps(maps, SUBSETS, modalities, "maps")
    axes = _axes_by_label(fig)
    for r, subset in enumerate(SUBSETS):
        for stride in maps:
            for j, modality in enumerate(modalities):
                ax = axes[f"{subset}|{stride}|{modality}"]
                if modality in subset.split("+"):
                    (image,) = ax.get_images()
                    assert image.get_clim() == (0.0, 1.0)
                    np.testing.assert_allclose(image.get_array(), maps[stride][r, j])
                    assert "absent" not in [t.get_text() for t in ax.texts]
                else:
                    assert not ax.get_images()
                    assert [t.get_text() for t in ax.texts] == ["absent"]
                    assert any(p.get_hatch() for p in ax.patches)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["1/8 · rgb", "1/8 · dsm", "1/16 · rgb", "1/16 · dsm"]  # fine to coarse
    cbar = _colourbar_axes(fig, "robustness weight r_m")
    assert cbar.get_ylim() == (0.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        plots.robustness_maps({4: np.zeros((3, 3, 2, 2))}, SUBSETS, modalities, "t")


def test_robustness_means_annotations():
    scales = [4, 8]
    table = {
        "sgma-complete": {
            "rgb": {"rgb": [0.913, 0.5], "dsm": [0.0, 0.0]},
            "dsm": {"rgb": [0.0, 0.0], "dsm": [0.25, np.nan]},
            "rgb+dsm": {"rgb": [0.61, 1.0], "dsm": [0.39, 0.0]},  # a present modality may weigh 0
        },
        "other": {s: {m: [0.5, 0.5] for m in ["rgb", "dsm"]} for s in SUBSETS},
    }
    fig = plots.robustness_means(table, scales, "means")
    axes = _axes_by_label(fig)
    for method, subsets in table.items():
        for subset, values in subsets.items():
            ax = axes[f"{method}|{subset}"]
            texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
            for r, modality in enumerate(values):
                for c, v in enumerate(values[modality]):
                    if modality not in subset.split("+") and v == 0.0:
                        assert texts[r, c] == "–"
                    elif np.isnan(v):
                        assert texts[r, c] == "n/a"
                    else:
                        assert float(texts[r, c]) == pytest.approx(np.round(v, 2), abs=1e-12)
            (image,) = ax.get_images()
            assert image.get_clim() == (0.0, 1.0)
            assert [t.get_text() for t in ax.get_xticklabels()] == ["1/4", "1/8"]
            if ax.get_subplotspec().colspan.start == 0:  # only the first column shows the modalities
                assert [t.get_text() for t in ax.get_yticklabels()] == list(values)
    _colourbar_axes(fig, "mean robustness r_m")
    with pytest.raises(ValueError):
        plots.robustness_means({}, scales, "t")
    with pytest.raises(ValueError, match="scales"):
        plots.robustness_means({"sgma-complete": {"rgb": {"rgb": [0.5]}}}, scales, "t")


# --- every builder renders -----------------------------------------------------------------------


@pytest.mark.slow  # renders every plot twice (~6 s)
def test_every_builder_renders_deterministically():
    images, label, preds, classes, palette, ignore = _qualitative_inputs()
    log = {"step": np.arange(30), "loss": np.linspace(2, 1, 30), "images_per_s": np.full(30, 12.0)}
    builders = [
        lambda: plots.grouped_bars(METHODS, COLUMNS, _values((3, 4)), _values((3, 4), 1, 0, 2), "b"),
        lambda: plots.fragility_plot(
            METHODS, [1, 2], _values((3, 2)), _values((3, 2), 1, 0, 2), "f", {"zeta": [(1, 5.0)]}
        ),
        lambda: plots.training_curves({"zeta": {0: log}}, "t"),
        lambda: plots.qualitative_panel(images, label, preds, SUBSETS, classes, palette, ignore, "q"),
        lambda: plots.robustness_maps({4: np.full((3, 2, 2, 2), 0.5)}, SUBSETS, ["rgb", "dsm"], "r"),
        lambda: plots.robustness_means({"s": {"rgb": {"rgb": [0.5], "dsm": [0.0]}}}, [4], "m"),
    ]
    for build in builders:
        first, second = plots.figure_bytes(build()), plots.figure_bytes(build())
        assert first == second
        assert first["png"].startswith(PNG_SIGNATURE)
        assert b"<svg" in first["svg"][:2000]
