"""ISPRS 2D semantic labelling benchmark: Potsdam and Vaihingen (archives obtained by hand).

Both data sets share six classes, the ISPRS colour code of their label images and the
``eroded`` / ``full`` choice of reference (the eroded "noBoundary" references blacken the class
boundaries, eroded with a disc of 3 px radius per ISPRS; ISPRS does not score these pixels, here
they become ``ignore_index``).

Colour labels are decoded by thresholding each channel at 128 and mapping the six colours of
the official code; any other colour (black boundaries, anything else) becomes ``ignore_index``.
Thresholding makes the decoding robust to resampling or compression noise (third parties report
that some Potsdam label tiles, e.g. ``top_potsdam_4_12``, do not use the exact colours).
Pixels of non-class colours are not counted; they are simply not scored.

Each needed file is found by its base name anywhere under the folder its archive was extracted
into (so an extra or missing top folder inside an archive does not matter); when the name occurs
more than once (the Vaihingen archive holds ``top/`` images and ``gts_for_participants/`` labels
with the same names), the one whose path ends with the official relative path is taken.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from pydantic import model_validator

from benchmark.config import FieldError, PositiveInt, Section, one_of
from benchmark.data.manual import ManualArchive, ManualArchiveSource
from benchmark.data.prepared import Storage
from benchmark.data.raster import Layer, RasterLayer, Scene
from benchmark.data.source import register_dataset
from benchmark.data.synthetic import CLASSES, PALETTE
from benchmark.io import read_json
from benchmark.layout import MANIFEST_FILE

IGNORE_INDEX = 255
# Official ISPRS colour code, in CLASSES order (impervious, building, low vegetation, tree, car, clutter).
COLOURS: tuple[tuple[int, int, int], ...] = tuple(
    (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)) for c in PALETTE
)  # label colour of each class, RGB
COLOUR_THRESHOLD = 128  # a channel value >= this counts as "on" (255), below as "off" (0)
DSM_VOID_FLOOR = -9999.0  # float DSM values <= this are voids (besides the file's nodata tag)

HOMEPAGE = "https://www.isprs.org/education/benchmarks/UrbanSemLab/default.aspx"
CITATION = (
    "Rottensteiner, F., Sohn, G., Jung, J., Gerke, M., Baillard, C., Benitez, S., Breitkopf, U.: "
    "The ISPRS benchmark on urban object classification and 3D building reconstruction. "
    "ISPRS Annals of the Photogrammetry, Remote Sensing and Spatial Information Sciences I-3, 293-298 (2012), "
    "doi:10.5194/isprsannals-I-3-293-2012"
)
HOW_TO_OBTAIN = (
    "ISPRS distributes the 2D semantic labelling data after a request form on the benchmark page; "
    "the archives cannot be downloaded automatically"
)
LABEL_VARIANTS = ("eroded", "full")
Labels = one_of(*LABEL_VARIANTS)

POTSDAM_TRAIN = (
    "2_10 2_11 2_12 3_10 3_11 3_12 4_10 4_11 4_12 5_10 5_11 5_12 6_10 6_11 6_12 6_7 6_8 6_9 7_10 7_11 7_12 7_7 7_8 7_9"
).split()
POTSDAM_TEST = "2_13 2_14 3_13 3_14 4_13 4_14 4_15 5_13 5_14 5_15 6_13 6_14 6_15 7_13".split()
VAIHINGEN_TRAIN = [1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37]
VAIHINGEN_TEST = [2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38]


def decode_colours(window: np.ndarray, layer: Layer) -> np.ndarray:
    """ISPRS colour label window float ``[3, h, w]`` (0-255, NaN = nodata) -> class indices uint8 ``[h, w]``.

    Each channel is thresholded at :data:`COLOUR_THRESHOLD`; the six class colours map to
    indices into ``CLASSES``, every other colour and any NaN to :data:`IGNORE_INDEX`.
    """
    if window.shape[0] != 3:
        raise ValueError(f"{layer.name}: {window.shape[0]} bands, expected 3 (an RGB colour label)")
    on = np.nan_to_num(window, nan=0.0) >= COLOUR_THRESHOLD
    code = on[0].astype(np.uint8) * 4 + on[1].astype(np.uint8) * 2 + on[2].astype(np.uint8)
    table = np.full(8, IGNORE_INDEX, np.uint8)
    for index, (r, g, b) in enumerate(COLOURS):
        table[(r > 0) * 4 + (g > 0) * 2 + (b > 0)] = index
    out = table[code]
    out[np.isnan(window).any(axis=0)] = IGNORE_INDEX
    return out


@dataclass
class VoidFloorLayer:
    """A float DSM whose values ``<= floor`` (besides the file's nodata tag) are voids (NaN).

    NaN is a void only in a file whose nodata tag is NaN: ISPRS documents no NaN voids, so any
    other NaN (and +-inf) is a corrupt pixel, refused by the :class:`RasterLayer` with the file,
    band and pixel named."""

    layer: RasterLayer
    floor: float = DSM_VOID_FLOOR

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.layer.shape

    @property
    def storage(self) -> Storage:
        """float32 with NaN: voids are values, not one sentinel."""
        return Storage("float32")

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """float32 ``[1, height, width]`` in m, NaN where void."""
        out = self.layer.read(row, col, height, width)
        out[out <= self.floor] = np.nan
        return out

    def close(self) -> None:
        self.layer.close()


def _check_tiles(where: str, train: Sequence[Any], test: Sequence[Any], known: Sequence[Any]) -> None:
    """train_tiles and test_tiles: each a non-empty list of distinct tiles of ``known``, none in both."""
    allowed = f"null (the official list) or a non-empty list of distinct tiles of the data set: {list(known)}"
    for key, tiles in (("train_tiles", train), ("test_tiles", test)):
        unknown = [t for t in tiles if t not in known]
        if not tiles or unknown or len(set(tiles)) != len(tiles):
            problem = f"holds unknown tile(s) {unknown}" if unknown else "is empty or repeats a tile"
            raise FieldError(where, key, list(tiles), allowed, f"{problem}; allowed: {allowed}")
    both = sorted(set(train) & set(test), key=str)
    if both:
        raise FieldError(where, "test_tiles", list(test), "tiles not in train_tiles", f"shares {both} with train_tiles")


class PotsdamConfig(Section):
    """params.yaml ``potsdam``."""

    where: ClassVar[str] = "potsdam"
    tile_size: PositiveInt = 512  # px per side of the square tiles (5 cm per px)
    stride: PositiveInt = 512  # px between tile origins (< tile_size: overlapping tiles)
    labels: Labels = "eroded"  # "eroded" (5_Labels_all_noBoundary) or "full" (5_Labels_all)
    dsm: one_of("ndsm", "dsm") = "ndsm"  # "ndsm" (1_DSM_normalisation, 8-bit JPEG) or "dsm" (1_DSM, float32 m)
    train_tiles: list[str] | None = None  # tile ids like "2_10"; None: the official 24 training tiles
    test_tiles: list[str] | None = None  # None: the official 14 test tiles

    @model_validator(mode="after")
    def _tiles(self) -> PotsdamConfig:
        _check_tiles(self.where, self.train, self.test, POTSDAM_TRAIN + POTSDAM_TEST)
        return self

    @property
    def train(self) -> list[str]:
        return list(POTSDAM_TRAIN if self.train_tiles is None else self.train_tiles)

    @property
    def test(self) -> list[str]:
        return list(POTSDAM_TEST if self.test_tiles is None else self.test_tiles)


class VaihingenConfig(Section):
    """params.yaml ``vaihingen`` (tiles are the numbered areas)."""

    where: ClassVar[str] = "vaihingen"
    tile_size: PositiveInt = 512  # px per side of the square tiles (9 cm per px)
    stride: PositiveInt = 512  # px between tile origins (< tile_size: overlapping tiles)
    labels: Labels = "eroded"  # "eroded" (..._ground_truth_eroded_COMPLETE) or "full" (..._ground_truth_COMPLETE)
    train_tiles: list[int] | None = None  # area numbers; None: the official 16 training areas
    test_tiles: list[int] | None = None  # None: the official 17 test areas

    @model_validator(mode="after")
    def _tiles(self) -> VaihingenConfig:
        _check_tiles(self.where, self.train, self.test, VAIHINGEN_TRAIN + VAIHINGEN_TEST)
        return self

    @property
    def train(self) -> list[int]:
        return list(VAIHINGEN_TRAIN if self.train_tiles is None else self.train_tiles)

    @property
    def test(self) -> list[int]:
        return list(VAIHINGEN_TEST if self.test_tiles is None else self.test_tiles)


class IsprsSource(ManualArchiveSource):
    """Shared machinery of the ISPRS data sets: params, file lookup, colour labels, tiling.

    Subclasses set ``config_type`` and ``md5s`` ({archive file name: published MD5}) and
    implement :meth:`archives` and :meth:`scene`.
    """

    classes = CLASSES
    palette = PALETTE
    ignore_index = IGNORE_INDEX
    homepage = HOMEPAGE
    citation = CITATION
    how_to_obtain = HOW_TO_OBTAIN
    md5s: ClassVar[Mapping[str, str]] = {}

    def __init__(self, params: Mapping[str, Any], raw_dir: Path | None = None) -> None:
        super().__init__(params, raw_dir)
        self._index: dict[str, dict[str, list[Path]]] = {}

    def archive(self, filename: str, contains: str) -> ManualArchive:
        """The :class:`ManualArchive` ``filename`` with its published MD5, if any."""
        return ManualArchive(filename, contains, self.md5s.get(filename))

    def locate(self, archive: ManualArchive, official_path: str) -> Path:
        """The extracted file whose official path inside ``archive`` is ``official_path``.

        Found by base name anywhere under the extracted folder; among several files of that name,
        the one whose path ends with ``official_path``. Zero or still several -> an error naming
        the base name, the archive and the folder.
        """
        folder = self.extracted(archive)
        if archive.filename not in self._index:
            index: dict[str, list[Path]] = {}
            for parent, _, files in os.walk(folder):
                for name in files:
                    index.setdefault(name, []).append(Path(parent) / name)
            self._index[archive.filename] = index
        base = PurePosixPath(official_path).name
        matches = sorted(self._index[archive.filename].get(base, []))
        if len(matches) > 1:
            matches = [p for p in matches if ("/" + p.relative_to(folder).as_posix()).endswith("/" + official_path)]
        if not matches:
            raise FileNotFoundError(
                f"{base}: not found in {folder} (extracted from {self.raw_dir / archive.filename}); the archive "
                f"lacks this tile, or train_tiles/test_tiles in params.yaml name a tile it does not hold"
            )
        if len(matches) > 1:
            raise ValueError(
                f"{base}: {len(matches)} files of that name in {folder} (extracted from "
                f"{self.raw_dir / archive.filename}): {', '.join(map(str, matches))}; expected one at {official_path}"
            )
        return matches[0]

    def label_layer(self, path: Path) -> RasterLayer:
        """The colour label: bands 1-3, the file's nodata tag ignored (colours are decoded as they are)."""
        return RasterLayer(path, bands=(1, 2, 3), nodata=math.nan)

    def splits(self) -> dict[str, list[Any]]:
        """``{"train": tiles, "test": tiles}`` from the params (the official split by default)."""
        return {"train": self.config.train, "test": self.config.test}

    def scene(self, tile: Any, split: str) -> Scene:
        raise NotImplementedError

    def source_info(self) -> dict[str, Any]:
        """What the prepared ``meta.json`` records under ``source`` (tile size and stride are added)."""
        verified = read_json(self.raw_dir / MANIFEST_FILE)["files"]
        return {
            "labels": self.config.labels,
            "label_decoding": f"each channel >= {COLOUR_THRESHOLD} is on; the 6 ISPRS colours -> classes, "
            f"any other colour -> {IGNORE_INDEX}",
            "archives": {a.filename: verified[a.filename]["md5"] for a in self.archives()},  # MD5 as verified
            **{f"{split}_tiles": tiles for split, tiles in self.splits().items()},
        }

    def prepare(self, out_dir: Path) -> Path:
        self.check_downloaded()
        scenes = [self.scene(tile, split) for split, tiles in self.splits().items() for tile in tiles]
        return self.write_scenes(out_dir, scenes, self.source_info())


@register_dataset("potsdam")
class Potsdam(IsprsSource):
    """ISPRS Potsdam: 38 true-ortho tiles of 6000 x 6000 px at 5 cm (24 train, 14 test).

    Modalities: ``rgb`` (3: bands 1-3 of ``top_potsdam_<t>_RGBIR.tif``, uint8 digital numbers),
    ``nir`` (1: band 4 of the same file), ``dsm`` (1): with ``dsm: ndsm`` (default) the 8-bit
    normalised DSM ``dsm_potsdam_<0t>_normalized_lastools.jpg`` (height above ground as grey
    values 0-255, not metres; no voids), with ``dsm: dsm`` the float32 DSM ``dsm_potsdam_<0t>.tif``
    in metres above sea level (voids: the file's nodata tag and values <= -9999 -> NaN; ISPRS documents
    no NaN voids, so a NaN the tag does not declare is an error naming the file).
    DSM file names zero-pad the tile numbers (``02_10`` for tile ``2_10``).

    Labels: ``labels: eroded`` (default, ``5_Labels_all_noBoundary.zip``, the reference ISPRS
    scores against) or ``full`` (``5_Labels_all.zip``). Only ``4_Ortho_RGBIR.zip`` has a
    published MD5 (torchgeo's); the other archives' checksums are recorded on first use.
    The split is the official one (as in torchgeo and mmsegmentation) unless ``train_tiles`` /
    ``test_tiles`` override it.
    """

    config_type = PotsdamConfig
    modalities = {"rgb": 3, "nir": 1, "dsm": 1}
    md5s = {"4_Ortho_RGBIR.zip": "c4a8f7d8c7196dd4eba4addd0aae10c1"}
    config: PotsdamConfig

    def _rgbir(self) -> ManualArchive:
        return self.archive("4_Ortho_RGBIR.zip", "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif")

    def _dsm(self) -> ManualArchive:
        if self.config.dsm == "ndsm":
            return self.archive(
                "1_DSM_normalisation.zip", "1_DSM_normalisation/dsm_potsdam_02_10_normalized_lastools.jpg"
            )
        return self.archive("1_DSM.zip", "1_DSM/dsm_potsdam_02_10.tif")

    def _labels(self) -> ManualArchive:
        if self.config.labels == "eroded":
            return self.archive("5_Labels_all_noBoundary.zip", "top_potsdam_2_10_label_noBoundary.tif")
        return self.archive("5_Labels_all.zip", "top_potsdam_2_10_label.tif")

    def archives(self) -> list[ManualArchive]:
        return [self._rgbir(), self._dsm(), self._labels()]

    def scene(self, tile: str, split: str) -> Scene:
        padded = "_".join(f"{int(n):02d}" for n in tile.split("_"))
        rgbir = self.locate(self._rgbir(), f"4_Ortho_RGBIR/top_potsdam_{tile}_RGBIR.tif")
        if self.config.dsm == "ndsm":
            path = self.locate(self._dsm(), f"1_DSM_normalisation/dsm_potsdam_{padded}_normalized_lastools.jpg")
            dsm: Layer = RasterLayer(path, expect_bands=1)
        else:
            path = self.locate(self._dsm(), f"1_DSM/dsm_potsdam_{padded}.tif")
            dsm = VoidFloorLayer(RasterLayer(path, expect_bands=1, nan_nodata=False))
        suffix = "_label_noBoundary.tif" if self.config.labels == "eroded" else "_label.tif"
        label = self.label_layer(self.locate(self._labels(), f"top_potsdam_{tile}{suffix}"))
        inputs = {
            "rgb": RasterLayer(rgbir, bands=(1, 2, 3), expect_bands=4),
            "nir": RasterLayer(rgbir, bands=(4,), expect_bands=4),
            "dsm": dsm,
        }
        return Scene(f"potsdam_{tile}", split, inputs, label, decode_colours)

    def source_info(self) -> dict[str, Any]:
        return {**super().source_info(), "dsm": self.config.dsm}


@register_dataset("vaihingen")
class Vaihingen(IsprsSource):
    """ISPRS Vaihingen: 33 true-ortho areas of about 2000 x 2500 px at 9 cm (16 train, 17 test).

    Modalities: ``irrg`` (3: the false-colour IR, R, G true ortho ``top/top_mosaic_09cm_area<N>.tif``,
    uint8 digital numbers, in that band order) and ``dsm`` (1: ``dsm/dsm_09cm_matching_area<N>.tif``,
    float32 DSM in metres; voids: the file's nodata tag and values <= -9999 -> NaN; an undeclared NaN
    is an error naming the file). Both come
    from ``ISPRS_semantic_labeling_Vaihingen.zip``, whose ``gts_for_participants/`` labels (training
    areas only, same file names as ``top/``) are not used: labels come from the complete reference
    archives, ``labels: eroded`` (default, ``..._ground_truth_eroded_COMPLETE.zip``, files
    ``top_mosaic_09cm_area<N>_noBoundary.tif``) or ``full`` (``..._ground_truth_COMPLETE.zip``).
    The separately distributed normalised DSM of Vaihingen is not supported. ``train_tiles`` /
    ``test_tiles`` are area numbers (the official split by default).
    """

    config_type = VaihingenConfig
    modalities = {"irrg": 3, "dsm": 1}
    md5s = {
        "ISPRS_semantic_labeling_Vaihingen.zip": "462b8dca7b6fa9eaf729840f0cdfc7f3",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip": "4802dd6326e2727a352fb735be450277",
    }
    config: VaihingenConfig

    def _images(self) -> ManualArchive:
        return self.archive("ISPRS_semantic_labeling_Vaihingen.zip", "top/top_mosaic_09cm_area1.tif")

    def _labels(self) -> ManualArchive:
        if self.config.labels == "eroded":
            return self.archive(
                "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
                "top_mosaic_09cm_area1_noBoundary.tif",
            )
        return self.archive("ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip", "top_mosaic_09cm_area1.tif")

    def archives(self) -> list[ManualArchive]:
        return [self._images(), self._labels()]

    def scene(self, tile: int, split: str) -> Scene:
        top = self.locate(self._images(), f"top/top_mosaic_09cm_area{tile}.tif")
        dsm = self.locate(self._images(), f"dsm/dsm_09cm_matching_area{tile}.tif")
        suffix = "_noBoundary.tif" if self.config.labels == "eroded" else ".tif"
        label = self.label_layer(self.locate(self._labels(), f"top_mosaic_09cm_area{tile}{suffix}"))
        inputs = {
            "irrg": RasterLayer(top, bands=(1, 2, 3), expect_bands=3),
            "dsm": VoidFloorLayer(RasterLayer(dsm, expect_bands=1, nan_nodata=False)),
        }
        return Scene(f"vaihingen_area{tile}", split, inputs, label, decode_colours)
