"""IEEE GRSS Data Fusion Contest 2023, track 2: building extraction with optical, SAR and height.

Track 2 ("Multi-task learning of joint building extraction and height estimation") of DFC2023
(Persello et al., IEEE GRSM 2023) pairs 512 x 512 px patches from 17 cities of

* ``train/rgb/<name>.tif``: optical image, 3 bands R, G, B, uint8 (SuperView-1 at 0.5 m or
  Gaofen-2 at 0.8 m; ``<name>`` is e.g. ``SV_Brasilia_-15.8466_-47.8966``) -> modality ``rgb``;
* ``train/sar/<name>.tif``: Gaofen-3 SAR intensity (about 1 m), one band, read as stored
  (the contest documents no unit or scaling; no dB conversion is applied) -> modality ``sar``;
* ``train/dsm/<name>.tif``: the normalised DSM (height above ground, m, float; from Gaofen-7 /
  WorldView stereo at about 2 m, resampled to the image grid) -> modality ``dsm``;
* ``buildings_only_train.json``: COCO instance annotations, one category "building", with
  polygon (and some RLE) segmentations in pixel coordinates of the image.

Official layout, as far as public sources show it. The IEEE DataPort release ``track2.zip``
holds ``track2/buildings_only_train.json``, ``track2/train/{rgb,sar,dsm}/`` and
``track2/val/{rgb,sar}/`` (validation images without any reference). The contest baseline's
README draws ``annotations/buildings_only_train.json`` and a ``height/`` folder instead of
``dsm/``; the reader therefore locates the files by pattern anywhere under the extracted
archive: the one ``buildings_only_train.json``, and the one ``train/`` folder holding ``rgb/``,
``sar/`` and ``dsm/`` (or ``height/``) with ``.tif``/``.tiff`` files named like the COCO
``file_name``. Anything missing is named in the error. The annotations' image list is the list
of samples; image files not in it are skipped (and counted in the prepared ``meta.json``).

Labels: classes ``background`` (0) and ``building`` (1), rasterised from the COCO segmentations
of each image: a pixel is a building when its centre ``(col + 0.5, row + 0.5)`` lies inside a
polygon (even-odd rule, COCO pixel coordinates with (0, 0) the top-left corner of the image). A
segmentation made of several polygons is the union of its parts (what pycocotools does; a COCO
polygon list cannot express holes, so an inner ring is filled). RLE segmentations (``iscrowd``
or not; compressed string or uncompressed list counts, column-major as in COCO) are decoded and
added. Every pixel is labelled (no ``ignore_index`` pixels): the release has no blank areas we
know of, and a blank area would be labelled background.

Nodata: each file's nodata tag becomes nodata (excluded from the statistics, 0 after
standardising); no other value is treated as nodata, NaN included: the release documents no
nodata value, so NaN is nodata only in a file whose nodata tag is NaN. A NaN in a file tagged
otherwise (or untagged), or +-inf anywhere, is a corrupt pixel: prepare stops with an error
naming the file, band and pixel.

Splits: only the official *train* part has annotations and heights (the validation and test
images were released without reference), so the benchmark splits the official train images:
names sorted, ``numpy.random.default_rng(split_seed).permutation`` of them, the first
``round(test_fraction * n)`` are ``test``, the rest ``train`` (``max_images`` keeps only the
first ``max_images`` of the permutation, for quick runs). The test image names are recorded in
the prepared ``meta.json`` (``source.test_images``). Neighbouring patches of one city can fall
on both sides, so test scores measure within-city generalisation and are optimistic for new
cities.

Honesty note on ``dsm``: the nDSM is the *reference* of the height-estimation task, not a
sensor input of the contest. The IMSS benchmark uses it as an input modality; buildings are
exactly the tall objects of an nDSM, so any subset containing ``dsm`` makes building extraction
much easier than from rgb and sar alone. Read the ``dsm`` subsets' scores as "with a reference
height map", not as what an optical + SAR system achieves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from benchmark.config import NonNegativeInt, PositiveInt, Section
from benchmark.data.manual import ManualArchive, ManualArchiveSource
from benchmark.data.prepared import Storage
from benchmark.data.raster import Layer, RasterLayer, Scene
from benchmark.data.source import register_dataset

CLASSES = ("background", "building")
PALETTE = ("#E0E0E0", "#D55E00")  # light grey background, vermilion buildings
MODALITIES = {"rgb": 3, "sar": 1, "dsm": 1}
ARCHIVE = "track2.zip"  # the IEEE DataPort file name of track 2
ANNOTATIONS = "buildings_only_train.json"
DEFAULT_CONTAINS = f"track2/{ANNOTATIONS}"  # where the release keeps it; any folder is accepted
FOLDERS = {"rgb": ("rgb",), "sar": ("sar",), "dsm": ("dsm", "height")}  # accepted folder names per modality
EXTENSIONS = (".tif", ".tiff", ".TIF", ".TIFF")
HOMEPAGE = "https://ieee-dataport.org/competitions/2023-ieee-grss-data-fusion-contest-large-scale-fine-grained-building-classification"
CITATION = (
    "Persello, C., Hänsch, R., Vivone, G., Chen, K., Yan, Z., Tang, D., Huang, H., Schmitt, M., Sun, X.: "
    "2023 IEEE GRSS Data Fusion Contest: Large-Scale Fine-Grained Building Classification for Semantic Urban "
    "Reconstruction [Technical Committees]. IEEE Geoscience and Remote Sensing Magazine 11(1), 94-97, 2023. "
    "Data: IEEE DataPort, doi:10.21227/mrnt-8w27."
)


class DFC2023Config(Section):
    """params.yaml ``dfc2023``."""

    where: ClassVar[str] = "dfc2023"
    tile_size: PositiveInt = 512  # px; the patches are 512 x 512, so one tile per image
    stride: PositiveInt = 512  # px between tile origins
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2  # share of the official train images in the test split
    split_seed: NonNegativeInt = 0  # seed of the permutation that picks the test images
    # use only this many images (the permutation's first; one train, one test at least); None: all
    max_images: Annotated[int, Field(ge=2)] | None = None


# --- COCO segmentations -> masks ---------------------------------------------------------------


def fill_polygon(mask: np.ndarray, xy: np.ndarray, row0: int = 0, col0: int = 0) -> None:
    """Set ``mask`` (bool ``[h, w]``, the window whose top-left pixel is (``row0``, ``col0``)) where a
    pixel centre lies inside the polygon ``xy`` (float ``[N, 2]``, x = column, y = row, in pixels
    with (0, 0) the image's top-left corner), by the even-odd rule."""
    h, w = mask.shape
    if len(xy) < 3 or h == 0 or w == 0:
        return
    xs, ys = xy[:, 0], xy[:, 1]
    # only the polygon's bounding box can change; pixels outside it have an even number of crossings
    r_lo, r_hi = max(math.floor(ys.min()) - row0, 0), min(math.ceil(ys.max()) - row0 + 1, h)
    c_lo, c_hi = max(math.floor(xs.min()) - col0, 0), min(math.ceil(xs.max()) - col0 + 1, w)
    if r_lo >= r_hi or c_lo >= c_hi:
        return
    inside = np.zeros((r_hi - r_lo, c_hi - c_lo), bool)
    xc = col0 + c_lo + np.arange(c_hi - c_lo) + 0.5
    for xa, ya, xb, yb in zip(xs, ys, np.roll(xs, -1), np.roll(ys, -1)):
        if ya == yb:
            continue  # a horizontal edge crosses no row centre's ray
        lo, hi = min(ya, yb), max(ya, yb)
        # rows whose centre y = row0 + r + 0.5 satisfies lo <= y < hi (half-open: a vertex counts once)
        start = max(math.ceil(lo - 0.5 - row0), r_lo)
        stop = min(math.ceil(hi - 0.5 - row0), r_hi)
        if start >= stop:
            continue
        y = row0 + np.arange(start, stop) + 0.5
        x_cross = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside[start - r_lo : stop - r_lo] ^= xc[None, :] < x_cross[:, None]
    mask[r_lo:r_hi, c_lo:c_hi] |= inside


def rle_counts_from_string(counts: str) -> list[int]:
    """COCO's compressed RLE string (pycocotools ``rleFrString``) -> run lengths."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def decode_rle(counts: Sequence[int], height: int, width: int, where: str) -> np.ndarray:
    """Run lengths (first run = 0s, column-major as in COCO) -> bool ``[height, width]``."""
    runs = np.asarray(counts, dtype=np.int64)
    if (runs < 0).any() or runs.sum() != height * width:
        raise ValueError(
            f"{where}: RLE counts sum to {int(runs.sum())}, expected {height} x {width} = {height * width}"
        )
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(width, height).T


@dataclass
class BuildingMaskLayer:
    """The building mask of one image, rasterised from its COCO segmentations window by window
    (no full-size array is kept). ``read`` gives float32 ``[1, h, w]``: 1 building, 0 background."""

    name: str
    height: int
    width: int
    polygons: list[np.ndarray] = field(default_factory=list)  # float64 [N, 2] (x, y) per polygon
    rles: list[tuple[list[int], str]] = field(default_factory=list)  # (run lengths, what errors call it)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.height, self.width)

    @property
    def storage(self) -> Storage:
        return Storage("uint8")  # 0 / 1

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), bool)
        for xy in self.polygons:
            fill_polygon(mask, xy, row, col)
        for counts, where in self.rles:
            mask |= decode_rle(counts, self.height, self.width, where)[row : row + height, col : col + width]
        return mask[None].astype(np.float32)

    def close(self) -> None:
        pass  # nothing open


def decode_building_label(window: np.ndarray, layer: Layer) -> np.ndarray:
    """``float[1, h, w]`` of 0 / 1 -> uint8 ``[h, w]`` class indices (0 background, 1 building)."""
    values = window[0]
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{layer.name}: mask values {np.unique(values).tolist()}, expected 0 or 1")
    return values.astype(np.uint8)


def _add_segmentation(layer: BuildingMaskLayer, ann: Mapping[str, Any], where: str) -> None:
    """Parse one annotation's ``segmentation`` (polygon list, RLE dict, or list of RLE dicts) into ``layer``."""
    seg = ann.get("segmentation")
    parts = seg if isinstance(seg, list) else [seg]
    for part in parts:
        if isinstance(part, dict):
            if "counts" not in part:
                raise ValueError(f"{where}: RLE segmentation without 'counts'")
            size = part.get("size")
            if size is not None and [int(s) for s in size] != [layer.height, layer.width]:
                raise ValueError(f"{where}: RLE size {size}, but the image is {layer.height} x {layer.width} px")
            counts = part["counts"]
            if isinstance(counts, bytes):
                counts = counts.decode("ascii")
            runs = rle_counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
            if min(runs, default=0) < 0 or sum(runs) != layer.height * layer.width:  # checked now, not mid-way
                raise ValueError(f"{where}: RLE counts sum to {sum(runs)}, expected {layer.height * layer.width} px")
            layer.rles.append((runs, where))
        elif isinstance(part, list):
            if len(part) % 2:
                raise ValueError(f"{where}: polygon with an odd number of coordinates ({len(part)})")
            if len(part) >= 6:  # fewer than 3 vertices cover no area
                layer.polygons.append(np.asarray(part, dtype=np.float64).reshape(-1, 2))
        else:
            raise ValueError(f"{where}: segmentation {type(part).__name__} is neither a polygon list nor an RLE dict")


def read_annotations(path: Path) -> dict[str, BuildingMaskLayer]:
    """``buildings_only_train.json`` -> ``{image name (file stem): its building mask layer}``.

    Errors name the file and the offending image or annotation (an annotation whose
    ``image_id`` is not in ``images``, a duplicate image, a malformed segmentation)."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable COCO JSON file ({err})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path}: not a COCO annotation file (no 'images' list)")
    by_id: dict[Any, tuple[str, BuildingMaskLayer]] = {}
    by_name: dict[str, BuildingMaskLayer] = {}
    for image in coco["images"]:
        try:
            file_name, height, width, image_id = (
                image["file_name"],
                int(image["height"]),
                int(image["width"]),
                image["id"],
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: image entry {image!r} lacks id, file_name, height or width") from None
        name = Path(str(file_name).replace("\\", "/")).stem
        if name in by_name or image_id in by_id:
            raise ValueError(f"{path}: image {file_name!r} (id {image_id}) is listed twice")
        by_name[name] = BuildingMaskLayer(f"{path} [buildings of {file_name}]", height, width)
        by_id[image_id] = (str(file_name), by_name[name])
    for number, ann in enumerate(coco.get("annotations", [])):
        where = f"{path}: annotation {ann.get('id', f'#{number}')}"
        if ann.get("image_id") not in by_id:
            raise ValueError(f"{where} refers to image_id {ann.get('image_id')!r}, which is not in the file's images")
        file_name, layer = by_id[ann["image_id"]]
        _add_segmentation(layer, ann, f"{where} (image {file_name})")
    return by_name


# --- locating the files --------------------------------------------------------------------------


def find_annotations(root: Path) -> Path:
    """The one ``buildings_only_train.json`` under ``root``."""
    found = sorted(p for p in root.rglob(ANNOTATIONS) if p.is_file())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(map(str, found))})"
        raise FileNotFoundError(f"{root}: {what} {ANNOTATIONS} found; the official {ARCHIVE} holds exactly one")
    return found[0]


def find_train_folders(root: Path) -> dict[str, Path]:
    """``{modality: folder}`` of the one ``train/`` folder under ``root`` with rgb/, sar/ and dsm/ (or height/)."""
    candidates = sorted(p for p in [root, *root.rglob("train")] if p.is_dir() and p.name == "train")
    found = []
    for train in candidates:
        folders = {}
        for modality, names in FOLDERS.items():
            hits = [train / n for n in names if (train / n).is_dir()]
            if hits:
                folders[modality] = hits[0]
        if folders:
            found.append((train, folders))
    complete = [(t, f) for t, f in found if len(f) == len(FOLDERS)]
    if len(complete) == 1:
        return complete[0][1]
    if len(complete) > 1:
        raise ValueError(f"{root}: several train/ folders with rgb/, sar/ and dsm/: {[str(t) for t, _ in complete]}")
    if found:
        train, folders = found[0]
        missing = [f"{'/ or '.join(FOLDERS[m])}/" for m in FOLDERS if m not in folders]
        raise FileNotFoundError(
            f"{train}: missing {', '.join(missing)} (the official {ARCHIVE} has train/rgb, sar, dsm)"
        )
    raise FileNotFoundError(f"{root}: no train/ folder with rgb/, sar/ and dsm/ (the layout of the official {ARCHIVE})")


def image_files(folder: Path) -> dict[str, Path]:
    """``{file stem: path}`` of the GeoTIFFs in ``folder``."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in EXTENSIONS}


def split_images(names: Sequence[str], test_fraction: float, seed: int, max_images: int | None) -> dict[str, list[str]]:
    """``{"train": [...], "test": [...]}`` (each sorted): a seeded permutation of the sorted names,
    cut to ``max_images``; its first ``round(test_fraction * n)`` (at least 1, at most n - 1) are test."""
    ordered = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    chosen = [ordered[i] for i in perm[: max_images if max_images is not None else len(ordered)]]
    if len(chosen) < 2:
        raise ValueError(f"dfc2023: {len(chosen)} image(s); need at least 2 to split into train and test")
    n_test = min(max(round(test_fraction * len(chosen)), 1), len(chosen) - 1)
    return {"train": sorted(chosen[n_test:]), "test": sorted(chosen[:n_test])}


# --- the data set --------------------------------------------------------------------------------


@register_dataset("dfc2023")
class DFC2023(ManualArchiveSource):
    """DFC2023 track 2: rgb + sar + nDSM -> background / building (see the module docstring).

    The user places the official ``track2.zip`` (IEEE DataPort, after registering for the
    contest) unchanged in ``data/raw/dfc2023/``. ``download()`` checks it (no MD5 is published:
    the one of the first verified copy is recorded), checks that it holds
    ``buildings_only_train.json`` and extracts it. ``prepare()`` rasterises the COCO building
    polygons per image and tiles the images of the seeded train/test split of the official train
    part. The ``dsm`` input is the height *reference* of the contest: subsets with ``dsm`` find
    buildings far more easily than rgb/sar alone.
    """

    config_type = DFC2023Config
    config: DFC2023Config

    classes = CLASSES
    palette = PALETTE
    modalities = MODALITIES
    sar_modalities = {"sar": "linear"}  # intensity as stored
    homepage = HOMEPAGE
    citation = CITATION
    how_to_obtain = (
        f"Register for the 2023 IEEE GRSS Data Fusion Contest on IEEE DataPort and download the track 2 archive "
        f"{ARCHIVE}"
    )

    def archives(self) -> list[ManualArchive]:
        return [ManualArchive(ARCHIVE, DEFAULT_CONTAINS, md5=None)]  # any top folder is accepted

    def scenes(self) -> tuple[list[Scene], dict[str, Any]]:
        """One scene per image of the split, and what the prepared ``meta.json`` records about them."""
        root = self.extracted(self.archives()[0])
        annotations = find_annotations(root)
        labels = read_annotations(annotations)
        folders = find_train_folders(root)
        files = {m: image_files(folder) for m, folder in folders.items()}
        for name in sorted(labels):
            absent = [str(folders[m] / f"{name}.tif") for m in self.modalities if name not in files[m]]
            if absent:
                raise FileNotFoundError(f"{annotations}: image {name!r} is annotated, but {', '.join(absent)} missing")
        unannotated = sorted(set(files["rgb"]) - set(labels))
        cfg = self.config
        split = split_images(list(labels), cfg.test_fraction, cfg.split_seed, cfg.max_images)
        scenes = []
        for part, names in split.items():
            for name in names:
                inputs: dict[str, Layer] = {  # NaN undocumented as nodata: only where a file's tag says so
                    m: RasterLayer(files[m][name], expect_bands=channels, nan_nodata=False)
                    for m, channels in self.modalities.items()
                }
                scenes.append(Scene(name, part, inputs, labels[name], decode_building_label))
        source = {
            **cfg.model_dump(),
            "archive": ARCHIVE,
            "annotations": str(annotations.relative_to(root)),
            "folders": {m: str(p.relative_to(root)) for m, p in folders.items()},
            "split": "seeded permutation of the sorted official train image names; first round(test_fraction*n) = test",
            "images": {"train": len(split["train"]), "test": len(split["test"])},
            "test_images": split["test"],
            "unannotated_images_skipped": len(unannotated),
            "dsm_note": "dsm is the contest's height reference; subsets with dsm make building extraction much easier",
        }
        return scenes, source

    def prepare(self, out_dir: Path) -> Path:
        self.check_downloaded()
        scenes, source = self.scenes()
        return self.write_scenes(out_dir, scenes, source)
