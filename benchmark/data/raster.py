"""Large co-registered scenes -> tiles of the prepared format, read window by window.

A data set describes each scene (one area, one split) as layers: one per modality and one for
the label. :func:`write_scenes` cuts every scene into ``size`` x ``size`` windows every
``stride`` pixels and streams them through :class:`~benchmark.data.prepared.PreparedWriter`, so
a scene of any size never sits in memory whole. GeoTIFFs (and anything else GDAL reads, e.g.
the JPEG nDSMs of ISPRS Potsdam) are read with rasterio's windowed reads.

Nodata: a pixel equal to a layer's nodata value (the file's own nodata tag unless the data set
overrides it) becomes NaN; the prepared format stores it as 0 after standardising (the channel's
training mean) and leaves it out of the statistics. NaN in the source is nodata only where that
value is NaN or the data set documents NaN as the layer's nodata (``RasterLayer.nan_nodata``);
any other NaN, and +-inf anywhere outside the nodata mask, is a corrupt pixel: a ValueError names
the file, band and pixel. Labels mark their own nodata with the data set's ``ignore_index``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from benchmark.data.prepared import PreparedWriter, Storage, common_storage


class Layer(Protocol):
    """Something with a ``(bands, height, width)`` shape that reads windows as float32 with NaN,
    and the :class:`Storage` that keeps its values losslessly (its source dtype and nodata)."""

    name: str  # what errors call it: a file path, or a description

    @property
    def shape(self) -> tuple[int, int, int]: ...

    @property
    def storage(self) -> Storage: ...

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass
class RasterLayer:
    """Bands of a raster file read with rasterio.

    Args:
        path: the file.
        bands: 1-based band indices to read, in order (None: all bands).
        nodata: the value that means "no data" (None: the file's own nodata tag, if any).
        expect_bands: the band count the file must have (checked on first use; None: any).
        expect_descriptions: band names in file order; when the file names its bands (GeoTIFF band
            descriptions) they must match, which catches a file with its bands in another order.
        nan_nodata: NaN pixels are nodata even though the nodata value is not NaN (set where the
            data set's documentation says NaN means "no data" for this layer). Otherwise NaN is
            nodata only when the nodata value (``nodata`` or the file's tag) is NaN.

    Reading a NaN that is not nodata, or +-inf (or a value beyond float32's range) that is not
    the nodata value, raises a ValueError naming the file, the band (1-based, as in the file),
    the pixel (row, col of the file) and the window.
    """

    path: Path
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    expect_bands: int | None = None
    expect_descriptions: tuple[str, ...] | None = None
    nan_nodata: bool = False
    _shape: tuple[int, int, int] | None = field(default=None, repr=False)
    _storage: Storage | None = field(default=None, repr=False)
    _src: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.path)

    def _open(self) -> Any:
        """The open rasterio dataset, kept open between windows (GDAL's block cache then serves
        overlapping windows and sequential formats such as JPEG without decoding them again)."""
        import rasterio

        if self._src is None:
            if not Path(self.path).is_file():
                raise FileNotFoundError(f"{self.path}: file not found")
            try:
                self._src = rasterio.open(self.path)
            except rasterio.errors.RasterioIOError as err:
                raise ValueError(f"{self.path}: not a readable raster ({err})") from None
        return self._src

    def close(self) -> None:
        """Close the file (reopened on the next read)."""
        if self._src is not None:
            self._src.close()
            self._src = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(bands read, height, width)``."""
        if self._shape is None:
            try:
                src = self._open()
                if self.expect_bands is not None and src.count != self.expect_bands:
                    raise ValueError(f"{self.path}: {src.count} bands, expected {self.expect_bands}")
                named = tuple(d or "" for d in src.descriptions)
                if self.expect_descriptions is not None and any(named) and named != self.expect_descriptions:
                    raise ValueError(f"{self.path}: bands {list(named)}, expected {list(self.expect_descriptions)}")
                if self.bands is not None and max(self.bands) > src.count:
                    raise ValueError(f"{self.path}: has {src.count} bands, cannot read band {max(self.bands)}")
                self._shape = (len(self.bands) if self.bands else src.count, src.height, src.width)
                dtypes = [src.dtypes[b - 1] for b in self.bands] if self.bands else src.dtypes
                nodata = self.nodata if self.nodata is not None else src.nodata
                self._storage = Storage.of(np.result_type(*dtypes), nodata)
            finally:
                self.close()  # checking every scene's files must not hold them all open
        return self._shape

    @property
    def storage(self) -> Storage:
        """The file's dtype (of the bands read) with its nodata value as the sentinel."""
        self.shape  # noqa: B018 - reads the header once
        assert self._storage is not None
        return self._storage

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """float32 ``[C, height, width]`` of the window, NaN where nodata (ValueError on a corrupt pixel)."""
        import rasterio
        from rasterio.windows import Window

        self.shape  # noqa: B018 - checks the band count once
        src = self._open()
        where = f"the {height}x{width} px window at row {row}, col {col}"
        try:
            data = src.read(list(self.bands) if self.bands else None, window=Window(col, row, width, height))
        except rasterio.errors.RasterioError as err:
            detail = err.__cause__ or err  # rasterio's "see previous exception" hides GDAL's message there
            raise ValueError(f"{self.path}: cannot read {where} ({detail}); the file is truncated or corrupt") from err
        nodata = self.nodata if self.nodata is not None else src.nodata
        nan_is_nodata = self.nan_nodata or (nodata is not None and bool(np.isnan(nodata)))
        with np.errstate(over="ignore"):  # values beyond float32's range become inf, caught below
            out = data.astype(np.float32)
        if nodata is not None and not np.isnan(nodata):
            out[data == nodata] = np.nan
        if data.dtype.kind == "f" and not nan_is_nodata:
            self._refuse(np.isnan(data), data, (row, col), where, nodata)
        self._refuse(np.isinf(out), data, (row, col), where, nodata)
        return out

    def _refuse(
        self, bad: np.ndarray, data: np.ndarray, origin: tuple[int, int], where: str, nodata: float | None
    ) -> None:
        """ValueError naming the file, band, first pixel and window when ``bad`` (bool ``[C, h, w]``) is set;
        ``origin`` is the window's top-left (row, col) in the file."""
        if not bad.any():
            return
        b, r, c = (int(i[0]) for i in np.nonzero(bad))
        band = self.bands[b] if self.bands else b + 1
        row, col = origin
        value = float(data[b, r, c])
        what = "NaN" if np.isnan(value) else f"infinite value {value}" if np.isinf(value) else f"value {value}"
        what += "" if np.isnan(value) or np.isinf(value) else " (beyond float32's range)"
        tag = "none" if nodata is None else repr(float(nodata))
        why = (
            "NaN is nodata only where that value is NaN or the data set documents NaN as this layer's nodata"
            if np.isnan(value)
            else "only NaN or the nodata value may mark missing pixels"
        )
        raise ValueError(
            f"{self.path}: {what} in band {band} at pixel row {row + r}, col {col + c} ({int(bad.sum())} such px "
            f"in {where}), outside the nodata mask (nodata value: {tag}; {why}): the file is corrupt"
        )


@dataclass
class ArrayLayer:
    """An in-memory ``[C, H, W]`` array (e.g. a label rasterised from polygons)."""

    name: str
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def storage(self) -> Storage:
        """The array's dtype (NaN marks nodata in a float array; an integer one has none)."""
        return Storage.of(self.array.dtype)

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        return np.asarray(self.array[:, row : row + height, col : col + width], dtype=np.float32)

    def close(self) -> None:
        pass


@dataclass
class WindowLayer:
    """The ``height`` x ``width`` block at (``row``, ``col``) of another layer, as a layer of its own
    (used to split one scene into spatially disjoint blocks)."""

    layer: Layer
    row: int
    col: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"{self.layer.name}[rows {self.row}:{self.row + self.height}, cols {self.col}:{self.col + self.width}]"

    @property
    def shape(self) -> tuple[int, int, int]:
        bands, height, width = self.layer.shape
        if self.row + self.height > height or self.col + self.width > width:
            raise ValueError(f"{self.name}: outside the {height}x{width} px raster")
        return bands, self.height, self.width

    @property
    def storage(self) -> Storage:
        return self.layer.storage

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        return self.layer.read(self.row + row, self.col + col, height, width)

    def close(self) -> None:
        self.layer.close()


@dataclass
class Scene:
    """One co-registered area of a split.

    ``decode_label`` turns the label layer's window ``float[C, h, w]`` (NaN = nodata) into class
    indices ``int[h, w]`` with the data set's ``ignore_index`` where unlabelled; it may raise an
    error naming the layer it is given.
    """

    name: str
    split: str
    inputs: Mapping[str, Layer]
    label: Layer
    decode_label: Callable[[np.ndarray, Layer], np.ndarray]

    def size(self) -> tuple[int, int]:
        """``(height, width)`` shared by every layer; a ValueError names a layer that differs."""
        _, height, width = self.label.shape
        for layer in self.inputs.values():
            if layer.shape[1:] != (height, width):
                raise ValueError(
                    f"{layer.name}: {layer.shape[1]}x{layer.shape[2]} px, but the label {self.label.name} "
                    f"is {height}x{width} px (scene {self.name})"
                )
        return height, width


def tile_windows(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left ``(row, col)`` of ``size`` x ``size`` windows every ``stride`` px covering the
    whole ``height`` x ``width`` area; the last row and column of windows snap to the far edge."""
    if size < 1 or stride < 1:
        raise ValueError(f"tile size and stride must be >= 1, got size={size} stride={stride}")
    if height < size or width < size:
        raise ValueError(f"a {height}x{width} px scene is smaller than the {size} px tile size")

    def starts(extent: int) -> list[int]:
        out = list(range(0, extent - size + 1, stride))
        if out[-1] != extent - size:
            out.append(extent - size)
        return out

    return [(r, c) for r in starts(height) for c in starts(width)]


def write_scenes(
    root: str | Path,
    scenes: Sequence[Scene],
    *,
    tile_size: int,
    stride: int,
    dataset: str,
    classes: Sequence[str],
    ignore_index: int,
    modalities: Mapping[str, int],
    source: Mapping[str, Any] | None = None,
    progress: bool = True,
    stats_split: str = "train",
    tags: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Tile every scene into the prepared format at ``root`` (statistics from ``stats_split``).

    Every layer's size and band count is checked before any pixel is read, so a wrong file fails
    in seconds with its name. Each modality is kept in the dtype its files hold it in
    (:func:`~benchmark.data.prepared.common_storage` of the layers' :class:`Storage`).
    ``modalities`` is ``{name: channels}`` in the data set's order.
    Labels become ``ignore_index`` where every modality is nodata (nothing to predict from) and,
    outside ``stats_split``, where an earlier window of the scene already holds the pixel (the
    snapped last windows, or ``stride < tile_size``), so an evaluation counts each pixel once.
    Training tiles keep their overlaps. ``tags`` (``{scene name: [tag, ...]}``, e.g. a frame's
    weather) go to ``meta.json`` as, per split, the indices of the tiles of each tag.
    """
    counts: dict[str, int] = {}
    grids = []  # each scene's windows, computed once
    for scene in scenes:
        for name, channels in modalities.items():
            if name not in scene.inputs:
                raise ValueError(f"scene {scene.name}: no layer for modality {name!r}")
            layer = scene.inputs[name]
            if layer.shape[0] != channels:
                raise ValueError(f"{layer.name}: {layer.shape[0]} bands for {name!r}, expected {channels}")
        grids.append(tile_windows(*scene.size(), tile_size, stride))
        counts[scene.split] = counts.get(scene.split, 0) + len(grids[-1])
    order = ["train", "valid", "test"]
    counts = dict(sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    with PreparedWriter(
        root,
        counts=counts,
        modalities=modalities,
        tile_shape=(tile_size, tile_size),
        dataset=dataset,
        classes=classes,
        ignore_index=ignore_index,
        source={"tile_size": tile_size, "stride": stride, **dict(source or {})},
        stats_split=stats_split,
        storage={m: common_storage([scene.inputs[m].storage for scene in scenes]) for m in modalities},
        tags=tile_tags(scenes, grids, counts, tags) if tags is not None else None,
    ) as writer:
        bar = tqdm(total=sum(counts.values()), desc=dataset, disable=not progress)
        for scene, grid in zip(scenes, grids):
            scored = np.zeros(scene.size(), bool)  # pixels an earlier window of this scene already holds
            for row, col in grid:
                window = (slice(row, row + tile_size), slice(col, col + tile_size))
                inputs = {m: scene.inputs[m].read(row, col, tile_size, tile_size) for m in modalities}
                label = scene.decode_label(scene.label.read(row, col, tile_size, tile_size), scene.label)
                label[np.logical_and.reduce([np.isnan(x).any(axis=0) for x in inputs.values()])] = ignore_index
                if scene.split != stats_split:
                    label[scored[window]] = ignore_index  # every evaluated pixel counts once
                scored[window] = True
                writer.add(scene.split, {m: x[None] for m, x in inputs.items()}, label[None])
                bar.update()
            for layer in [*scene.inputs.values(), scene.label]:
                layer.close()
        bar.close()
    return Path(root)


def tile_tags(
    scenes: Sequence[Scene], grids: Sequence[Sequence[Any]], splits: Sequence[str], tags: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, list[int]]]:
    """``{split: {tag: [tile index, ...]}}``: each scene's ``tags`` on every tile cut from it, in
    the order :func:`write_scenes` writes the tiles (scenes in order, each split counted apart)."""
    out: dict[str, dict[str, list[int]]] = {split: {} for split in splits}
    filled = dict.fromkeys(splits, 0)
    for scene, grid in zip(scenes, grids):
        first = filled[scene.split]
        for tag in tags.get(scene.name, ()):
            out[scene.split].setdefault(tag, []).extend(range(first, first + len(grid)))
        filled[scene.split] = first + len(grid)
    return {split: dict(sorted(by_tag.items())) for split, by_tag in out.items()}
