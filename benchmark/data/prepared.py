"""The prepared on-disk format every data set is converted to, and its torch Dataset.

Layout of ``data/prepared/<dataset>/``::

    meta.json                 {"dataset", "modalities": {name: channels}, "classes", "ignore_index",
                               "splits": {split: num_tiles}, "normalisation": {name: {"mean", "std"}},
                               "storage": {name: {"dtype", "nodata"}}, "source",
                               optional "tags": {split: {tag: [tile index]}}, e.g. a frame's weather}
    <split>/<modality>.npy    [N, C_m, H, W] in the source's units and in the smallest dtype that holds
                              them losslessly (:class:`Storage`); nodata: NaN, or the integer sentinel
    <split>/label.npy         uint8/int16 [N, H, W] class indices, ``ignore_index`` where unlabelled

Standardising (``(x - mean) / std`` per channel with the training split's statistics, nodata -> 0)
happens when a tile is loaded (:meth:`PreparedDataset.standardise`, on whichever device the batch
is on), so 8-bit imagery takes one byte per value on disk instead of four. ``.npy`` files are
memory-mapped at load time, so a data set larger than RAM still trains.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.io import atomic_write, atomic_write_json, make_temp_dir, read_json, remove_stale_temps, replace_dir
from benchmark.layout import META_FILE

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # modality and split names in meta.json


class RunningStats:
    """Per-channel mean and std of many ``float[N, C, H, W]`` chunks, NaN skipped (Chan et al.'s
    pairwise update in float64, so the result does not depend on how the data is chunked beyond
    rounding)."""

    def __init__(self, channels: int) -> None:
        self.count = np.zeros(channels, np.float64)
        self.mean = np.zeros(channels, np.float64)
        self.m2 = np.zeros(channels, np.float64)

    def update(self, array: np.ndarray) -> None:
        x = np.moveaxis(np.asarray(array, np.float64), 1, 0).reshape(array.shape[1], -1)
        valid = ~np.isnan(x)
        n = valid.sum(axis=1).astype(np.float64)
        safe = np.where(valid, x, 0.0)
        mean = np.divide(safe.sum(axis=1), n, out=np.zeros_like(n), where=n > 0)
        m2 = (np.where(valid, x - mean[:, None], 0.0) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        ratio = np.divide(n, total, out=np.zeros_like(n), where=total > 0)
        self.mean = self.mean + delta * ratio
        self.m2 = self.m2 + m2 + delta**2 * self.count * ratio
        self.count = total

    def result(self, where: str) -> tuple[list[float], list[float]]:
        """``(mean, std)`` per channel (std floored at 1e-6); ValueError naming ``where`` if a
        channel never held a valid value."""
        if np.any(self.count == 0):
            empty = np.flatnonzero(self.count == 0).tolist()
            raise ValueError(f"{where}: channel(s) {empty} hold no valid (non-nodata) value in the statistics split")
        std = np.sqrt(self.m2 / self.count)
        return self.mean.tolist(), np.maximum(std, 1e-6).tolist()


STORAGE_DTYPES = ("uint8", "int16", "uint16", "float16", "float32")  # what a modality may be kept as


@dataclass(frozen=True)
class Storage:
    """How one modality is kept on disk: numpy ``dtype`` (one of :data:`STORAGE_DTYPES`) and, for an
    integer dtype, the ``nodata`` sentinel (None: the modality has no nodata). Float dtypes mark
    nodata with NaN (``nodata`` is then None)."""

    dtype: str = "float32"
    nodata: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype {self.dtype!r}: must be one of {list(STORAGE_DTYPES)}")
        if self.nodata is not None and not self.is_integer:
            raise ValueError(f"storage {self.dtype}: a float dtype marks nodata with NaN, not {self.nodata!r}")
        if self.nodata is not None and not _holds(self.dtype, self.nodata):
            raise ValueError(f"storage {self.dtype}: nodata sentinel {self.nodata!r} is not a {self.dtype} value")

    @property
    def is_integer(self) -> bool:
        return np.dtype(self.dtype).kind in "iu"

    @classmethod
    def of(cls, dtype: Any, nodata: float | None = None) -> Storage:
        """The storage of source values of numpy ``dtype`` whose nodata value is ``nodata`` (None or
        NaN: none besides NaN): the dtype itself when listed, else float32 (what every reader
        gives); an integer dtype keeps ``nodata`` as its sentinel when it is one of its values."""
        name = np.dtype(dtype).name
        if name not in STORAGE_DTYPES:
            return cls("float32")
        if np.dtype(name).kind == "f" or nodata is None or not _holds(name, nodata):
            return cls(name)
        return cls(name, int(nodata))

    def encode(self, array: np.ndarray, where: str) -> np.ndarray:
        """Source values ``float[...]`` (NaN = nodata) in this storage; a ValueError naming ``where``
        when a value would not come back exactly (out of range, fractional, or the sentinel)."""
        nan = np.isnan(array)
        if self.is_integer and nan.any() and self.nodata is None:
            raise ValueError(f"{where}: nodata (NaN) in a {self.dtype} modality with no nodata value")
        fill = 0 if self.nodata is None else self.nodata
        with np.errstate(invalid="ignore", over="ignore"):
            out = (np.where(nan, fill, array) if self.is_integer else array).astype(self.dtype)
        lost = out.astype(np.float32) != array
        if self.nodata is not None:
            lost |= out == self.nodata  # a valid value would read back as nodata
        bad = ~nan & lost
        if bad.any():
            value = float(array[bad].flat[0])
            sentinel = "" if self.nodata is None else f" (its nodata sentinel is {self.nodata})"
            raise ValueError(
                f"{where}: value {value!r} cannot be kept as {self.dtype}{sentinel} without loss "
                f"({int(bad.sum())} such values)"
            )
        return out

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored values (any shape, any device) -> ``(float32 values, bool nodata)``, same shape.
        Only the cast touches the stored dtype (every kept integer is exact in float32), so
        uint16, which few torch kernels take, works on every device."""
        values = x.float()
        return values, torch.isnan(values) if self.nodata is None else values == float(self.nodata)


def _holds(dtype: str, value: float) -> bool:
    """Whether ``value`` is exactly one of ``dtype``'s values."""
    if np.dtype(dtype).kind == "f":
        return bool(np.isfinite(value))
    info = np.iinfo(dtype)
    return bool(np.isfinite(value)) and float(value).is_integer() and info.min <= value <= info.max


def common_storage(storages: Sequence[Storage]) -> Storage:
    """One storage holding what each of ``storages`` holds (several files of one modality):
    their common dtype with their sentinel; float32 (NaN for nodata) when that dtype is not listed
    or the sentinels differ (a valid value of one file may be another's sentinel)."""
    dtype = np.result_type(*[np.dtype(s.dtype) for s in storages]).name
    sentinels = {s.nodata for s in storages}
    if dtype not in STORAGE_DTYPES or len(sentinels) != 1:
        return Storage("float32")
    return Storage.of(dtype, sentinels.pop())


def label_dtype(num_classes: int, ignore_index: int) -> np.dtype:
    """uint8 when every class index and ``ignore_index`` fit, else int16."""
    return np.dtype(np.uint8 if num_classes <= 255 and 0 <= ignore_index <= 255 else np.int16)


class PreparedWriter:
    """Write a prepared data set batch by batch, never holding it in memory.

    ::

        with PreparedWriter(root, counts={"train": 48, "test": 16}, modalities={"s1": 2, "s2": 13},
                            tile_shape=(64, 64), dataset="x", classes=["a", "b"], ignore_index=255) as out:
            out.add("train", {"s1": float[N, 2, 64, 64], "s2": ...}, label int[N, 64, 64])  # NaN = nodata

    Values in the source's units go to memory-mapped ``.npy`` files, each modality in its
    ``storage`` (default float32; a value it cannot hold exactly is an error naming it), in a
    temporary folder beside ``root`` while the per-channel statistics of ``stats_split``
    accumulate. On a clean exit ``meta.json`` is written and the folder is renamed to ``root``
    (replacing an older one only then). On an error the temporary folder is removed and ``root``
    is left as it was.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        counts: Mapping[str, int],
        modalities: Mapping[str, int],
        tile_shape: tuple[int, int],
        dataset: str,
        classes: Sequence[str],
        ignore_index: int,
        source: Mapping[str, Any] | None = None,
        stats_split: str = "train",
        storage: Mapping[str, Storage] | None = None,
        tags: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.counts, self.modalities = dict(counts), dict(modalities)
        self.tile_shape = (int(tile_shape[0]), int(tile_shape[1]))
        self.dataset, self.classes, self.ignore_index = dataset, list(classes), int(ignore_index)
        self.source, self.stats_split = dict(source or {}), stats_split
        unknown = sorted(set(storage or {}) - set(self.modalities))
        if unknown:
            raise ValueError(
                f"{dataset}: storage given for {unknown}, which are not modalities {list(self.modalities)}"
            )
        self.storage = {m: (storage or {}).get(m, Storage()) for m in self.modalities}
        self.tags = (
            None if tags is None else {s: {t: list(map(int, i)) for t, i in by.items()} for s, by in tags.items()}
        )
        if self.tags is not None:
            check_tags(f"{dataset}: tags", self.tags, self.counts)
        if stats_split not in self.counts:
            raise ValueError(f"{dataset}: statistics split {stats_split!r} missing from {list(self.counts)}")
        for split, n in self.counts.items():
            if n < 1:
                raise ValueError(f"{dataset}/{split}: no tiles (check the tile size, stride and file lists)")
        self.stats = {m: RunningStats(c) for m, c in self.modalities.items()}
        self.filled = dict.fromkeys(self.counts, 0)
        self.tmp: Path | None = None

    def __enter__(self) -> PreparedWriter:
        remove_stale_temps(self.root)  # the half-written folder of a killed prepare (possibly GBs)
        self.tmp = make_temp_dir(self.root)
        h, w = self.tile_shape
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        for split, n in self.counts.items():
            (self.tmp / split).mkdir()
            self.arrays[split] = {
                m: np.lib.format.open_memmap(self.tmp / split / f"{m}.npy", "w+", self.storage[m].dtype, (n, c, h, w))
                for m, c in self.modalities.items()
            }
            self.arrays[split]["label"] = np.lib.format.open_memmap(
                self.tmp / split / "label.npy", "w+", label_dtype(len(self.classes), self.ignore_index), (n, h, w)
            )
        return self

    def add(self, split: str, inputs: Mapping[str, np.ndarray], label: np.ndarray) -> None:
        """Append ``N`` tiles: ``inputs`` ``{modality: float[N, C, H, W]}`` (NaN = nodata), ``label`` int[N, H, W]."""
        where = f"{self.dataset}/{split}"
        if split not in self.counts:
            raise ValueError(f"{where}: unknown split (have {list(self.counts)})")
        if list(inputs) != list(self.modalities):
            raise ValueError(f"{where}: modalities {list(inputs)} != {list(self.modalities)}")
        n, start = label.shape[0], self.filled[split]
        if label.shape[1:] != self.tile_shape or start + n > self.counts[split]:
            raise ValueError(
                f"{where}: label shape {label.shape} does not fit {self.counts[split]} tiles of {self.tile_shape}"
            )
        for m, array in inputs.items():
            if array.shape != (n, self.modalities[m], *self.tile_shape):
                raise ValueError(f"{where}/{m}: shape {array.shape} does not match label {label.shape}")
            if np.isinf(array).any():
                raise ValueError(f"{where}/{m}: infinite values (nodata must be NaN)")
            if split == self.stats_split:
                self.stats[m].update(array)
            self.arrays[split][m][start : start + n] = self.storage[m].encode(array, f"{where}/{m}")
        bad = (label != self.ignore_index) & ((label < 0) | (label >= len(self.classes)))
        if bad.any():
            raise ValueError(f"{where}: label values {np.unique(label[bad]).tolist()} are not class indices")
        self.arrays[split]["label"][start : start + n] = label
        self.filled[split] = start + n

    def _finish(self) -> None:
        assert self.tmp is not None
        for split, n in self.counts.items():
            if self.filled[split] != n:
                raise ValueError(f"{self.dataset}/{split}: {self.filled[split]} tiles written, {n} announced")
        norm = {}
        for m, stats in self.stats.items():
            mean, std = stats.result(f"{self.dataset}/{self.stats_split}/{m}")
            norm[m] = {"mean": mean, "std": std}
        for arrays in self.arrays.values():
            for array in arrays.values():
                array.flush()
        del self.arrays  # close the memory maps before renaming
        meta = {
            "dataset": self.dataset,
            "modalities": self.modalities,
            "classes": self.classes,
            "ignore_index": self.ignore_index,
            "splits": self.counts,
            "normalisation": norm,
            "storage": {m: asdict(storage) for m, storage in self.storage.items()},
            "source": self.source,
        }
        if self.tags is not None:
            meta["tags"] = self.tags
        atomic_write_json(self.tmp / META_FILE, meta)
        replace_dir(self.tmp, self.root)

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        try:
            if kind is None:
                self._finish()
        finally:
            self.arrays = {}
            if self.tmp is not None and self.tmp.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)


def write_prepared(
    root: str | Path,
    splits: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]],
    *,
    dataset: str,
    classes: Sequence[str],
    ignore_index: int,
    source: Mapping[str, Any] | None = None,
    stats_split: str = "train",
    storage: Mapping[str, Storage] | None = None,
) -> Path:
    """Write in-memory splits ``{split: ({modality: float[N, C, H, W]}, label int[N, H, W])}``
    through :class:`PreparedWriter` (same format, statistics, storage and atomicity)."""
    if stats_split not in splits:
        raise ValueError(f"{dataset}: statistics split {stats_split!r} missing from {list(splits)}")
    first_inputs, first_label = splits[stats_split]
    modalities = {name: int(a.shape[1]) for name, a in first_inputs.items()}
    with PreparedWriter(
        root,
        counts={split: int(label.shape[0]) for split, (_, label) in splits.items()},
        modalities=modalities,
        tile_shape=tuple(first_label.shape[1:]),
        dataset=dataset,
        classes=classes,
        ignore_index=ignore_index,
        source=source,
        stats_split=stats_split,
        storage=storage,
    ) as writer:
        for split, (inputs, label) in splits.items():
            writer.add(split, inputs, label)
    return Path(root)


def read_meta(root: str | Path) -> dict[str, Any]:
    """Read and check ``meta.json`` of a prepared data set (errors name the file and key)."""
    path = Path(root) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: prepared data set not found (run the prepare stage: dvc repro)")
    meta = read_json(path)  # a truncated or garbled file: ValueError naming it
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a JSON object (got {type(meta).__name__}); run the prepare stage again")
    for key, kind in (
        ("dataset", str),
        ("modalities", dict),
        ("classes", list),
        ("ignore_index", int),
        ("splits", dict),
    ):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{path}: key {key!r} missing or not a {kind.__name__}")
    for key in ("modalities", "splits"):  # names become file and folder names: plain, never a path
        for name, count in meta[key].items():
            if not _SAFE_NAME.fullmatch(name) or not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError(
                    f"{path}: {key} entry {name!r}: {count!r}; expected a plain name (letters, digits, '_', '-') "
                    f"and a positive int"
                )
    read_storage(path, meta)
    _check_normalisation(path, meta)
    if "tags" in meta:
        check_tags(f"{path}: tags", meta["tags"], meta["splits"])
    return meta


def check_tags(where: str, tags: Any, splits: Mapping[str, int]) -> None:
    """``tags`` is ``{split: {tag: [tile index, ...]}}`` with known splits and indices in
    ``range(splits[split])``, else a ValueError naming ``where`` and the entry."""
    if not isinstance(tags, dict):
        raise ValueError(f"{where}: {type(tags).__name__}, expected {{split: {{tag: [tile index, ...]}}}}")
    for split, by_tag in tags.items():
        if split not in splits or not isinstance(by_tag, dict):
            raise ValueError(f"{where}: entry {split!r} is not a split {list(splits)} with a {{tag: indices}} mapping")
        for tag, indices in by_tag.items():
            ok = isinstance(indices, list) and all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < splits[split] for i in indices
            )
            if not ok:
                raise ValueError(f"{where}: {split}/{tag}: tile indices must be ints in [0, {splits[split]})")


def read_storage(path: Path, meta: Mapping[str, Any]) -> dict[str, Storage]:
    """``meta["storage"]`` as :class:`Storage` per modality; a ValueError names the file and key."""
    entries = meta.get("storage")
    if not isinstance(entries, dict):
        raise ValueError(
            f"{path}: key 'storage' missing or not a dict: written by an older version of the suite "
            f"(float32, standardised); prepare the data set again (dvc repro)"
        )
    storage = {}
    for name in meta["modalities"]:
        entry = entries.get(name)
        try:
            storage[name] = Storage(**entry)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: storage entry {name!r}: {entry!r} ({err})") from None
    return storage


def _check_normalisation(path: Path, meta: Mapping[str, Any]) -> None:
    """Each modality has ``{"mean": [C floats], "std": [C positive floats]}``, else a ValueError."""
    norms = meta.get("normalisation")
    for name, channels in meta["modalities"].items():
        entry = norms.get(name) if isinstance(norms, dict) else None
        ok = isinstance(entry, dict) and all(
            isinstance(entry.get(k), list)
            and len(entry[k]) == channels
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in entry[k])
            for k in ("mean", "std")
        )
        if not ok or min(entry["std"]) <= 0:
            raise ValueError(
                f"{path}: normalisation entry {name!r}: {entry!r}; expected 'mean' and 'std' lists of "
                f"{channels} finite numbers (std > 0)"
            )


def load_array(path: Path, ndim: int, kind: str) -> np.ndarray:
    """Memory-map a prepared ``.npy``; a missing, truncated or garbled file, or one of another
    rank (``ndim``) or dtype (``kind``: numpy kind letters such as ``"iu"``, or a dtype name such
    as ``"uint8"``) is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (the prepared data set is incomplete; prepare it again)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"{path}: not a readable .npy file ({err}); it is truncated or corrupt, prepare it again"
        ) from None
    named = kind in STORAGE_DTYPES
    ok = isinstance(array, np.ndarray) and array.ndim == ndim
    if not ok or (array.dtype.name != kind if named else array.dtype.kind not in kind):
        what = f"dtype {kind}" if named else f"kind {kind!r}"
        raise ValueError(
            f"{path}: {getattr(array, 'dtype', '?')} array of shape {getattr(array, 'shape', '?')}, expected "
            f"{ndim} dimensions of {what} (meta.json); prepare the data set again"
        )
    return array


class PreparedDataset(Dataset):
    """One split of a prepared data set.

    ``dataset[i] -> ({modality: float32[C_m, H, W]}, int64[H, W])``, standardised with nodata 0;
    the default collate turns a list of these into the batch ``({modality: float[B, C_m, H, W]},
    int64[B, H, W])``. With ``standardised=False`` the inputs come as stored (each modality in its
    :class:`Storage` dtype, in the source's units) and :meth:`standardise` turns a batch of them
    into the same floats on whichever device it is on: the trainer moves the compact values.
    """

    def __init__(self, root: str | Path, split: str, standardised: bool = True) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        if split not in self.meta["splits"]:
            raise ValueError(f"{self.root / META_FILE}: no split {split!r} (have {list(self.meta['splits'])})")
        self.split = split
        self.modalities: dict[str, int] = dict(self.meta["modalities"])
        self.classes: list[str] = list(self.meta["classes"])
        self.ignore_index: int = int(self.meta["ignore_index"])
        self.storage = read_storage(self.root / META_FILE, self.meta)
        self.standardised = standardised
        self.tags: dict[str, list[int]] = dict(self.meta.get("tags", {}).get(split, {}))  # tag -> tile indices
        norms = self.meta["normalisation"]
        self.mean = {m: torch.tensor(norms[m]["mean"], dtype=torch.float32).reshape(-1, 1, 1) for m in self.modalities}
        self.std = {m: torch.tensor(norms[m]["std"], dtype=torch.float32).reshape(-1, 1, 1) for m in self.modalities}
        folder = self.root / split
        self.labels = load_array(folder / "label.npy", 3, "iu")
        n = self.meta["splits"][split]
        if len(self.labels) != n:
            raise ValueError(f"{folder / 'label.npy'}: {len(self.labels)} tiles, but {META_FILE} announces {n}")
        self.arrays = {m: load_array(folder / f"{m}.npy", 4, self.storage[m].dtype) for m in self.modalities}
        for m, array in self.arrays.items():
            if array.shape != (n, self.modalities[m], *self.labels.shape[1:]):
                raise ValueError(
                    f"{folder / (m + '.npy')}: shape {array.shape}, but {META_FILE} and label.npy give "
                    f"{(n, self.modalities[m], *self.labels.shape[1:])}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """``(H, W)`` of every tile, pixels."""
        return int(self.labels.shape[1]), int(self.labels.shape[2])

    def stored(self, index: int) -> dict[str, torch.Tensor]:
        """Tile ``index`` as stored: ``{modality: [C_m, H, W]}`` in its storage dtype and source units."""
        return {m: torch.from_numpy(np.array(a[index])) for m, a in self.arrays.items()}

    def as_stored(self) -> PreparedDataset:
        """This split yielding its inputs as stored (for a loader whose batches go through
        :meth:`standardise` on their device); it shares this one's memory maps."""
        view = copy.copy(self)
        view.standardised = False
        return view

    def standardise(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stored values ``{modality: [C_m, H, W] or [B, C_m, H, W]}`` on any device ->
        ``(x - mean) / std`` per channel (the training split's statistics), float32, nodata -> 0."""
        out = {}
        for m, x in inputs.items():
            values, nodata = self.storage[m].decode(x)
            z = (values - self.mean[m].to(x.device)) / self.std[m].to(x.device)
            out[m] = z.masked_fill(nodata, 0.0)
        return out

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs = self.stored(index)
        label = torch.from_numpy(np.array(self.labels[index], dtype=np.int64))
        return (self.standardise(inputs) if self.standardised else inputs), label

    def display(self, index: int, bands: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
        """Tile ``index`` as images to show, per modality: ``float[H, W, 3]`` (3 channels as RGB) or
        ``float[H, W]`` (grey) in [0, 1], back in the source's units and stretched 2-98 % per image;
        nodata (NaN) stays NaN. ``bands``: 0-based channels per modality (default: its first three,
        or first one)."""
        images = {}
        for name, stored in self.stored(index).items():
            shown = list((bands or {}).get(name, range(min(3, self.modalities[name]))))
            values, nodata = self.storage[name].decode(stored[shown])
            x = values.masked_fill(nodata, float("nan")).numpy().astype(np.float64)
            finite = x[np.isfinite(x)]
            lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
            x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
            images[name] = x.transpose(1, 2, 0) if len(shown) == 3 else x[0]
        return images

    def plot(
        self,
        indices: Sequence[int] = (0, 1, 2, 3),
        path: str | Path | None = None,
        bands: Mapping[str, Sequence[int]] | None = None,
        palette: Sequence[str] | None = None,
    ) -> Any:
        """One row per tile: every modality (3 channels as RGB, 1 in grey; 2-98 % stretch per
        image, nodata shows as mid-grey) and the label (a colour per class, ignored pixels black).
        ``bands``: 0-based channels to show per modality (default: its first three, or first one);
        ``palette``: a colour per class (default: matplotlib's tab10).

        Returns the matplotlib Figure; with ``path`` also writes it as PNG (atomically).
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        columns = [*self.modalities, "label"]
        fig, axes = plt.subplots(
            len(indices), len(columns), figsize=(2.2 * len(columns), 2.2 * len(indices)), squeeze=False
        )
        colours = list(palette or plt.get_cmap("tab10").colors)[: len(self.classes)]
        cmap = ListedColormap([*colours, (0.0, 0.0, 0.0)])
        for row, index in enumerate(indices):
            _, label = self[index]
            images = self.display(index, bands)
            for col, name in enumerate(columns):
                ax = axes[row][col]
                if name == "label":
                    shown = np.where(label.numpy() == self.ignore_index, len(self.classes), label.numpy())
                    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(self.classes) + 0.5, interpolation="nearest")
                else:
                    x = np.nan_to_num(images[name], nan=0.5)  # nodata: mid-grey
                    ax.imshow(x, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(name)
            axes[row][0].set_ylabel(f"tile {index}")
        fig.legend(
            handles=[Patch(color=c, label=k) for c, k in zip(colours, self.classes)],
            loc="lower center",
            ncol=min(len(self.classes), 6),
            fontsize="small",
            frameon=False,
        )
        fig.suptitle(f"{self.meta['dataset']} ({self.split})")
        fig.tight_layout(rect=(0, 0.06, 1, 0.97))
        if path is not None:
            atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None}))
        return fig
