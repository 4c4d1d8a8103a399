"""DELIVER (Zhang et al., CVPR 2023): rgb, depth, event and lidar of a simulated car's front
camera, 25 classes, five weathers and five sensor failures.

Layout, as the authors' own loader reads it (``semseg/datasets/deliver.py`` and the README of
``jamycheung/DELIVER`` at commit 4981c16d0fd825d9309ce97a7a1654fef1756bbf)::

    DELIVER/{img,hha,depth,event,lidar,semantic}/<weather>/<split>/<sequence>/<frame>_<kind>_front.png

* the frames of a split are every ``img/*/<split>/*/*.png`` (sorted); ``split`` is ``train``,
  ``val`` or ``test`` (prepared as ``train``, ``valid`` and ``test``);
* the other modalities of a frame by path substitution, as the loader does: ``/img`` ->
  ``/hha`` and ``_rgb`` -> ``_depth`` for ``depth`` (depth is read from the ``hha`` folder, not
  from ``depth``), ``/lidar`` and ``_lidar``, ``/event`` and ``_event``, ``/semantic`` and
  ``_semantic`` for the label. Substitution is applied to the path *inside* the data set folder,
  so a parent folder named e.g. ``/img`` cannot be rewritten;
* every modality has three channels: a one-channel image is repeated to three and a
  four-channel one cut to its first three (the loader's ``_open_img``; rgb is cut to three as
  well). Three channels are kept even where they repeat one, so a model sees what CMNeXt sees;
* the event image is resized to the rgb frame's size with nearest neighbour
  (``TF.resize(..., NEAREST)``: source index ``floor(i * in / out)``);
* the label is channel 0 of the semantic PNG as uint8, ``label[label == 255] = 0; label -= 1``:
  raw 1..25 become classes 0..24, raw 0 and 255 become 255 (ignored). Any other raw value would
  give a class index of 25 or more, which the loader would pass on; here it is an error naming
  the file;
* a frame's conditions: its weather (the folder after ``img/``: ``cloud``, ``fog``, ``night``,
  ``rain``, ``sun``) and each sensor failure (``motionblur``, ``overexposure``,
  ``underexposure``, ``lidarjitter``, ``eventlowres``) whose name occurs in its sequence folder
  or file name. The loader selects a case by ``case in path`` on the whole path, which also
  finds ``rain`` in every ``train`` path (and in any parent folder's name); the authors report
  conditions on ``val`` and ``test``, where the two rules agree. The prepared ``meta.json``
  lists under ``tags`` the tiles of each split per condition.

Not checked against the real archive (the suite has no copy): the archive's file name
(``DELIVER.zip`` assumed), the band counts of the PNGs, and where the sensor-failure names
occur in the paths. The errors name what was looked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np

from benchmark.config import PositiveInt, Section
from benchmark.data.manual import ManualArchive, ManualArchiveSource
from benchmark.data.prepared import Storage
from benchmark.data.raster import Layer, RasterLayer, Scene
from benchmark.data.source import register_dataset

CLASSES = (
    "building", "fence", "other", "pedestrian", "pole", "road_line", "road", "sidewalk", "vegetation", "cars",
    "wall", "traffic_sign", "sky", "ground", "bridge", "rail_track", "ground_rail", "traffic_light", "static",
    "dynamic", "water", "terrain", "two_wheeler", "bus", "truck",
)  # fmt: skip  # the loader's CLASSES, in its order, snake case
PALETTE = (
    "#464646", "#642828", "#375A50", "#DC143C", "#999999", "#9DEA32", "#804080", "#F423E8", "#6B8E23", "#00008E",
    "#66669C", "#DCDC00", "#4682B4", "#510051", "#966464", "#E6968C", "#B4A5B4", "#FAAA1E", "#6EBEA0", "#AA7832",
    "#2D3C96", "#91AA64", "#0000E6", "#003C64", "#000046",
)  # fmt: skip  # the loader's PALETTE
MODALITIES = {"rgb": 3, "depth": 3, "event": 3, "lidar": 3}
#: each modality's folder and file-name part, in place of ``img`` and ``rgb``
FOLDERS = {"rgb": ("img", "rgb"), "depth": ("hha", "depth"), "event": ("event", "event"), "lidar": ("lidar", "lidar")}
LABEL_FOLDER = ("semantic", "semantic")
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # official name -> prepared name
WEATHERS = ("cloud", "fog", "night", "rain", "sun")
FAILURES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
ARCHIVE = "DELIVER.zip"
CONTAINS = "DELIVER/depth/cloud/test/MAP_10_point102/045050_depth_front.png"  # drawn in the README's tree
HOMEPAGE = "https://github.com/jamycheung/DELIVER"
CITATION = (
    "Zhang, J., Liu, R., Shi, H., Yang, K., Reiß, S., Peng, K., Fu, H., Wang, K., Stiefelhagen, R.: Delivering "
    "Arbitrary-Modal Semantic Segmentation. CVPR 2023."
)


class DeliverConfig(Section):
    """params.yaml ``deliver``."""

    where: ClassVar[str] = "deliver"
    tile_size: PositiveInt = 1042  # px; the frames are 1042 x 1042, so one tile per frame
    stride: PositiveInt = 1042  # px between tile origins
    max_frames: PositiveInt | None = None  # per split, the first (sorted) frames only, for quick runs; None: all


def partner(relative: PurePosixPath, folder: str, kind: str) -> PurePosixPath:
    """The path (inside the data set folder) of the ``folder``/``kind`` file of the frame whose rgb
    image is ``relative`` (``img/<weather>/<split>/<sequence>/<frame>_rgb_front.png``)."""
    text = str(relative)
    return PurePosixPath(text.replace("img/", f"{folder}/", 1).replace("_rgb", f"_{kind}"))


def conditions_of(relative: PurePosixPath) -> list[str]:
    """The conditions of the frame whose rgb image is ``relative``
    (``img/<weather>/<split>/<sequence>/<file>``): its weather folder, and each sensor failure
    whose name occurs in ``<sequence>/<file>``. The loader's ``case in path`` on the whole path
    would also find ``rain`` in every ``train`` path."""
    weather, rest = relative.parts[1], "/".join(relative.parts[3:])
    if weather not in WEATHERS:
        raise ValueError(f"{relative}: weather folder {weather!r} is none of {list(WEATHERS)}")
    return [weather, *(f for f in FAILURES if f in rest)]


def decode_deliver_label(window: np.ndarray, layer: Layer) -> np.ndarray:
    """Channel 0 of a semantic PNG window ``float[C, h, w]`` -> class indices uint8 ``[h, w]``:
    raw 1..25 -> 0..24; raw 0 and 255 (and nodata) -> 255; anything else a ValueError naming it."""
    raw = np.nan_to_num(window[0], nan=255.0)
    bad = (raw > len(CLASSES)) & (raw != 255)
    if bad.any():
        r, c = (int(i[0]) for i in np.nonzero(bad))
        raise ValueError(
            f"{layer.name}: label value {int(raw[r, c])} at row {r}, col {c} of the window is neither 0, 255 nor a "
            f"class 1..{len(CLASSES)} ({int(bad.sum())} such px)"
        )
    label = raw.astype(np.uint8)
    label[label == 255] = 0
    return label - np.uint8(1)  # 0 -> 255 by uint8 wrap-around, as the loader's label -= 1


@dataclass
class ThreeChannelLayer:
    """A PNG read as three channels, the loader's way: one channel repeated, four cut to three;
    with ``like`` (the frame's rgb layer), resized with nearest neighbour to its size first (the
    event image)."""

    layer: RasterLayer
    like: RasterLayer | None = None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def shape(self) -> tuple[int, int, int]:
        bands, height, width = self.layer.shape
        if bands not in (1, 3, 4):
            raise ValueError(f"{self.name}: {bands} bands; DELIVER's images have 1, 3 or 4")
        return (3, *(self.like.shape[1:] if self.like is not None else (height, width)))

    @property
    def storage(self) -> Storage:
        return self.layer.storage

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        bands, src_h, src_w = self.layer.shape
        _, out_h, out_w = self.shape  # checks the band count
        if self.like is None:
            out = self.layer.read(row, col, height, width)
        else:  # the source rows and columns the window's pixels come from, read as one window
            rows = nearest_index(src_h, out_h)[row : row + height]
            cols = nearest_index(src_w, out_w)[col : col + width]
            block = self.layer.read(
                int(rows[0]), int(cols[0]), int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
            )
            out = block[:, rows - rows[0]][:, :, cols - cols[0]]
        return np.repeat(out, 3, axis=0) if bands == 1 else out[:3]

    def close(self) -> None:
        self.layer.close()


def nearest_index(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each of ``size_out`` outputs in a nearest resize from ``size_in``:
    ``min(floor(i * size_in / size_out), size_in - 1)`` with the scale in float32, as torch's
    ``interpolate(mode="nearest")`` computes it."""
    scale = np.float32(size_in) / np.float32(size_out)
    index = np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, size_in - 1)


def find_root(extracted: Path) -> Path:
    """The folder holding ``img/`` and ``semantic/`` under ``extracted`` (a FileNotFoundError
    says what is missing)."""
    candidates = sorted(p.parent for p in [extracted / "img", *extracted.rglob("img")] if p.is_dir())
    for root in candidates:
        if (root / LABEL_FOLDER[0]).is_dir():
            return root
    raise FileNotFoundError(
        f"{extracted}: no folder holding img/ and semantic/ (the layout of the official {ARCHIVE}: "
        f"DELIVER/{{img,hha,event,lidar,semantic}}/<weather>/<split>/<sequence>/*.png)"
    )


@register_dataset("deliver")
class Deliver(ManualArchiveSource):
    """DELIVER: rgb + depth (HHA) + event + lidar -> 25 classes (see the module docstring).

    The user downloads the archive from the Google Drive link of the DELIVER README and places
    it unchanged as ``data/raw/deliver/DELIVER.zip``. ``download()`` checks it (no MD5 is
    published: the one of the first verified copy is recorded) and extracts it. ``prepare()``
    tiles every frame of the official train, val and test splits (prepared as ``train``,
    ``valid``, ``test``) and records each tile's conditions under ``tags`` in ``meta.json``.
    """

    config_type = DeliverConfig
    config: DeliverConfig

    classes = CLASSES
    palette = PALETTE
    modalities = MODALITIES
    display_bands = {m: (0, 1, 2) for m in MODALITIES}  # each as its three channels (HHA as false colour)
    homepage = HOMEPAGE
    citation = CITATION
    how_to_obtain = (
        f"Download the DELIVER archive (about 12.2 GB) from the Google Drive link in the DELIVER README and save it "
        f"as {ARCHIVE}"
    )

    def archives(self) -> list[ManualArchive]:
        return [ManualArchive(ARCHIVE, CONTAINS, md5=None)]

    def frames(self, root: Path) -> dict[str, list[PurePosixPath]]:
        """``{prepared split: [rgb paths inside root, sorted]}``, cut to ``max_frames``; a split with
        no frame is a FileNotFoundError naming the pattern."""
        out = {}
        for official, split in SPLITS.items():
            found = sorted(p.relative_to(root).as_posix() for p in root.glob(f"img/*/{official}/*/*.png"))
            if not found:
                raise FileNotFoundError(f"{root}: no frame img/<weather>/{official}/<sequence>/*.png")
            out[split] = [PurePosixPath(f) for f in found[: self.config.max_frames]]
        return out

    def partners(self, root: Path, rgb: PurePosixPath) -> dict[str, Path]:
        """The files of the frame whose rgb image is ``rgb``: ``{modality: path, "label": path}``."""
        files = {m: root / partner(rgb, *FOLDERS[m]) for m in self.modalities}
        return {**files, "label": root / partner(rgb, *LABEL_FOLDER)}

    def check_partners(self, root: Path, frames: Mapping[str, list[PurePosixPath]]) -> None:
        """A FileNotFoundError listing every frame file that is missing (the first 20 and a count),
        before any pixel is read."""
        paths = [p for rgbs in frames.values() for rgb in rgbs for p in self.partners(root, rgb).values()]
        self.check_present(
            root, paths, "of the frames missing (every frame has rgb, hha, event, lidar and semantic images)"
        )

    def scene(self, root: Path, split: str, rgb: PurePosixPath) -> Scene:
        """One frame: its four modalities (event resized to the rgb size) and its label."""
        files = self.partners(root, rgb)
        label = files.pop("label")
        layers = {m: RasterLayer(path) for m, path in files.items()}
        like = layers.get("rgb") or RasterLayer(root / rgb)  # the event's target size (rgb may be left out)
        inputs: dict[str, Layer] = {
            m: ThreeChannelLayer(layer, like if m == "event" else None) for m, layer in layers.items()
        }
        return Scene(str(rgb), split, inputs, RasterLayer(label), decode_deliver_label)

    def prepare(self, out_dir: Path) -> Path:
        self.check_downloaded()
        root = find_root(self.extracted(self.archives()[0]))
        frames = self.frames(root)
        self.check_partners(root, frames)
        scenes = [self.scene(root, split, rgb) for split, paths in frames.items() for rgb in paths]
        tags = {str(rgb): conditions_of(rgb) for paths in frames.values() for rgb in paths}
        source = {
            **self.config.model_dump(),
            "archive": ARCHIVE,
            "layout": "jamycheung/DELIVER semseg/datasets/deliver.py at 4981c16d0fd825d9309ce97a7a1654fef1756bbf",
            "frames": {split: len(paths) for split, paths in frames.items()},
            "splits": {prepared: official for official, prepared in SPLITS.items()},
        }
        return self.write_scenes(out_dir, scenes, source, tags=tags)
