"""The prepared on-disk format every data set is converted to, and its torch Dataset.

Layout of ``data/prepared/<dataset>/``::

    meta.json                 {"dataset", "modalities": {name: channels}, "classes", "ignore_index",
                               "splits": {split: num_tiles}, "normalisation": {name: {"mean", "std"}}, "source"}
    <split>/<modality>.npy    float32 [N, C_m, H, W], standardised per channel, nodata -> 0
    <split>/label.npy         uint8/int16 [N, H, W] class indices, ``ignore_index`` where unlabelled

``.npy`` files are memory-mapped at load time, so a data set larger than RAM still trains.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.io import atomic_write, atomic_write_json, default_mode, read_json

META_FILE = "meta.json"


def channel_statistics(array: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel nan-aware mean and std of ``float[N, C, H, W]`` (std floored at 1e-6)."""
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(array, axis=(0, 2, 3), dtype=np.float64)
        std = np.nanstd(array, axis=(0, 2, 3), dtype=np.float64)
    if not np.all(np.isfinite(mean)):
        raise ValueError("a channel holds no valid (non-NaN) value")
    return mean.tolist(), np.maximum(std, 1e-6).tolist()


def standardise(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(x - mean) / std`` per channel, NaN (nodata) -> 0: float32 ``[N, C, H, W]``."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    out = (array.astype(np.float32) - m) / s
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


def write_prepared(
    root: str | Path,
    splits: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]],
    *,
    dataset: str,
    classes: Sequence[str],
    ignore_index: int,
    source: Mapping[str, Any] | None = None,
    stats_split: str = "train",
) -> Path:
    """Standardise with ``stats_split``'s statistics and write the layout above atomically.

    ``splits``: ``{split: ({modality: float[N, C, H, W]}, label int[N, H, W])}``. Everything is
    written to a temporary folder beside ``root`` and renamed into place at the end, so an
    interrupted run never leaves a half-written data set.
    """
    root = Path(root)
    if stats_split not in splits:
        raise ValueError(f"{dataset}: statistics split {stats_split!r} missing from {list(splits)}")
    train_inputs = splits[stats_split][0]
    modalities = {name: int(a.shape[1]) for name, a in train_inputs.items()}
    norm = {}
    for name, array in train_inputs.items():
        mean, std = channel_statistics(array)
        norm[name] = {"mean": mean, "std": std}
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp.chmod(default_mode("dir"))  # mkdtemp creates 0700
    try:
        for split, (inputs, label) in splits.items():
            if list(inputs) != list(modalities):
                raise ValueError(f"{dataset}/{split}: modalities {list(inputs)} != {list(modalities)}")
            (tmp / split).mkdir()
            for name, array in inputs.items():
                if array.ndim != 4 or array.shape[0] != label.shape[0] or array.shape[2:] != label.shape[1:]:
                    raise ValueError(
                        f"{dataset}/{split}/{name}: shape {array.shape} does not match label {label.shape}"
                    )
                np.save(tmp / split / f"{name}.npy", standardise(array, **norm[name]))
            np.save(tmp / split / "label.npy", label)
        meta = {
            "dataset": dataset,
            "modalities": modalities,
            "classes": list(classes),
            "ignore_index": int(ignore_index),
            "splits": {split: int(label.shape[0]) for split, (_, label) in splits.items()},
            "normalisation": norm,
            "source": dict(source or {}),
        }
        atomic_write_json(tmp / META_FILE, meta)
        if root.exists():
            old = root.with_name(f".{root.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            root.rename(old)
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def read_meta(root: str | Path) -> dict[str, Any]:
    """Read and check ``meta.json`` of a prepared data set (errors name the file and key)."""
    path = Path(root) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: prepared data set not found (run the prepare stage: dvc repro)")
    meta = read_json(path)
    for key, kind in (
        ("dataset", str),
        ("modalities", dict),
        ("classes", list),
        ("ignore_index", int),
        ("splits", dict),
    ):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{path}: key {key!r} missing or not a {kind.__name__}")
    return meta


class PreparedDataset(Dataset):
    """One split of a prepared data set.

    ``dataset[i] -> ({modality: float32[C_m, H, W]}, int64[H, W])``; the default collate turns a
    list of these into the batch ``({modality: float[B, C_m, H, W]}, int64[B, H, W])``.
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        if split not in self.meta["splits"]:
            raise ValueError(f"{self.root / META_FILE}: no split {split!r} (have {list(self.meta['splits'])})")
        self.split = split
        self.modalities: dict[str, int] = dict(self.meta["modalities"])
        self.classes: list[str] = list(self.meta["classes"])
        self.ignore_index: int = int(self.meta["ignore_index"])
        folder = self.root / split
        self.arrays = {m: np.load(folder / f"{m}.npy", mmap_mode="r") for m in self.modalities}
        self.labels = np.load(folder / "label.npy", mmap_mode="r")
        for m, array in self.arrays.items():
            if array.shape[0] != len(self.labels) or array.shape[1] != self.modalities[m]:
                raise ValueError(f"{folder / (m + '.npy')}: shape {array.shape} disagrees with meta.json/labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """``(H, W)`` of every tile, pixels."""
        return int(self.labels.shape[1]), int(self.labels.shape[2])

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs = {m: torch.from_numpy(np.array(a[index], dtype=np.float32)) for m, a in self.arrays.items()}
        return inputs, torch.from_numpy(np.array(self.labels[index], dtype=np.int64))

    def plot(self, indices: Sequence[int] = (0, 1, 2, 3), path: str | Path | None = None) -> Any:
        """One row per tile: every modality (3 channels as RGB, 1 in grey; 2-98 % stretch per
        image, nodata shows as mid-grey) and the label (a colour per class, ignored pixels black).

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
        colours = plt.get_cmap("tab10").colors[: len(self.classes)]
        cmap = ListedColormap([*colours, (0.0, 0.0, 0.0)])
        for row, index in enumerate(indices):
            inputs, label = self[index]
            for col, name in enumerate(columns):
                ax = axes[row][col]
                if name == "label":
                    shown = np.where(label.numpy() == self.ignore_index, len(self.classes), label.numpy())
                    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(self.classes) + 0.5, interpolation="nearest")
                else:
                    x = inputs[name].numpy()[:3]
                    norm = self.meta.get("normalisation", {}).get(name)
                    if norm:  # back to the source's units, so colours keep their balance
                        x = x * np.reshape(norm["std"][:3], (-1, 1, 1)) + np.reshape(norm["mean"][:3], (-1, 1, 1))
                    lo, hi = np.percentile(x, [2, 98])
                    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)
                    ax.imshow(x.transpose(1, 2, 0) if len(x) == 3 else x[0], cmap="gray", interpolation="nearest")
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
