"""EarthMiss (Zhou et al., Remote Sensing of Environment 2025): 0.6 m optical + SAR land cover of
13 cities, made for mapping with a missing modality; 8 classes.

Layout, as the authors' loader reads it (``data/EarthMiss.py`` and ``configs/metadata/EarthMiss.py``
of ``Yi-Heng/EarthMiss`` at commit d57c3b37d67300d56d58ac47d4cbf08f226596c8)::

    <root>/<City>/images/RGB/<id>.(tif|png)        optical, 3 bands (8 bit)
    <root>/<City>/images/SAR/<id>_SAR.(tif|png)    SAR, 1 band (8 bit)
    <root>/<City>/masks/<id>_mask.(tif|png)        the label

* split by city: 7 train, 3 val and 3 test cities (:data:`CITIES`; prepared as ``train``,
  ``valid`` and ``test``). The shipped configuration's validation loader reads the *test*
  cities; here validation and test stay apart;
* the loader concatenates SAR (1 channel) and RGB (3); here they are the modalities ``optical``
  and ``sar``;
* an index mask (one band, or three equal bands) holds 1..8 for the classes and 0 for no label:
  the loader's ``mask - 1`` gives classes 0..7 and -1 (ignored; 255 here);
* the repository's issue 3 reports that the released masks are colour maps (the loader's
  ``COLOR_MAP``, :data:`PALETTE`) and that padding is coloured as Background. A colour mask is
  read through the palette, and a pixel where every optical and SAR value is 0 (padding) is
  ignored. A colour the palette lacks is an error naming the file, the pixel and the colour;
* every tile is tagged with its city (``meta.json`` ``tags``), so the report's conditions table
  gives each test city its own mIoU.

Not checked against the real files (the suite has no copy): the archive's name (``EarthMiss.zip``
assumed), which mask form the Zenodo release holds, the images' size and whether padding is
exactly zero in both optical and SAR. docs/datasets.md says how to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from benchmark.config import PositiveInt, Section
from benchmark.data.manual import ManualArchive, ManualArchiveSource
from benchmark.data.prepared import Storage
from benchmark.data.raster import Layer, RasterLayer, Scene
from benchmark.data.source import register_dataset

CLASSES = ("background", "building", "road", "water", "barren", "forest", "agricultural", "playground")
COLOURS = (  # the loader's COLOR_MAP, in class order
    (255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128),
    (165, 0, 165),
)  # fmt: skip
PALETTE = tuple("#{:02X}{:02X}{:02X}".format(*c) for c in COLOURS)
MODALITIES = {"optical": 3, "sar": 1}
CITIES = {  # prepared split -> the official cities (configs/metadata/EarthMiss.py)
    "train": (
        "America-Eugene", "America-Louisville", "French-Paris", "Morocco-Casablanca", "Nanjing",
        "Netherlands-Rotterdam", "Singapore",
    ),
    "valid": ("Australia-PortHedland", "America-Pake", "Russian-Engels"),
    "test": ("America-NewYork", "Japan-Hakodate", "Peru-Callao"),
}  # fmt: skip
SUFFIXES = (".tif", ".png")
ARCHIVE = "EarthMiss.zip"
CONTAINS = "America-NewYork/masks/"  # a folder of a test city: any file under it will do
HOMEPAGE = "https://github.com/Yi-Heng/EarthMiss"
CITATION = (
    "Zhou, Y., Ma, A., Wang, J., Chen, Z., Zhong, Y.: Remote sensing meta modal representation for missing "
    "modality land cover mapping: From EarthMiss dataset to MetaRS method. Remote Sensing of Environment, "
    "2025, doi:10.1016/j.rse.2025.115132. Data: Zenodo record 17231107."
)
IGNORE = 255


class EarthMissConfig(Section):
    """params.yaml ``earthmiss``."""

    where: ClassVar[str] = "earthmiss"
    tile_size: PositiveInt = 512  # px; the authors train on 512 px crops
    stride: PositiveInt = 512  # px between tile origins
    max_images: PositiveInt | None = None  # per city, the first (sorted) images only, for quick runs; None: all


def decode_earthmiss_mask(window: np.ndarray, layer: Layer) -> np.ndarray:
    """A :class:`MaskLayer` window ``float[C + 1, h, w]`` (the mask's bands, then 1 where the
    optical and SAR pixels are all 0) -> class indices uint8 ``[h, w]``, 255 ignored.

    A pixel whose mask bands are equal and at most 8 is an index (1..8 -> 0..7, 0 -> ignored);
    with three or more bands, a palette colour is its class and padding is ignored; anything
    else is a ValueError naming the layer, the pixel and the value."""
    bands, padding = np.nan_to_num(window[:-1], nan=0.0), window[-1] > 0
    grey = np.all(bands == bands[:1], axis=0) & (bands[0] <= len(CLASSES))
    label = np.where(grey, bands[0] - 1, IGNORE).astype(np.int64)
    label[label < 0] = IGNORE
    known = grey.copy()
    if len(bands) >= 3:
        for index, colour in enumerate(COLOURS):
            match = np.all(bands[:3] == np.array(colour, np.float32)[:, None, None], axis=0) & ~grey
            label[match] = index
            known |= match
        label[padding & ~grey] = IGNORE
    if not known.all():
        r, c = (int(i[0]) for i in np.nonzero(~known))
        value = [int(v) for v in bands[:, r, c]]
        raise ValueError(
            f"{layer.name}: mask value {value if len(value) > 1 else value[0]} at row {r}, col {c} of the window is "
            f"neither an index 0..{len(CLASSES)} nor a colour of the palette {dict(zip(CLASSES, COLOURS))} "
            f"({int((~known).sum())} such px)"
        )
    return label.astype(np.uint8)


@dataclass
class MaskLayer:
    """The mask's bands and, as one more band, the padding of the image: 1 where every optical and
    SAR value is 0 (what :func:`decode_earthmiss_mask` reads for a colour map; 0 for an index mask,
    whose decoding does not use it, so that the images are not read again)."""

    mask: RasterLayer
    optical: RasterLayer
    sar: RasterLayer

    @property
    def name(self) -> str:
        return self.mask.name

    @property
    def shape(self) -> tuple[int, int, int]:
        bands, height, width = self.mask.shape
        if bands not in (1, 3, 4):
            raise ValueError(f"{self.name}: {bands} bands; an EarthMiss mask has 1 (index) or 3-4 (colour map)")
        return bands + 1, height, width

    @property
    def storage(self) -> Storage:
        return Storage.of(np.dtype(np.uint8))

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        mask = self.mask.read(row, col, height, width)
        padding = np.zeros((1, height, width), np.float32)  # an index mask: the decoder reads no padding
        if len(mask) >= 3:  # a colour map: padding where every optical and SAR value is 0
            images = np.concatenate([layer.read(row, col, height, width) for layer in (self.optical, self.sar)])
            padding[0] = np.all(images == 0, axis=0)
        return np.concatenate([mask, padding])

    def close(self) -> None:
        for layer in (self.mask, self.optical, self.sar):
            layer.close()


def find_root(extracted: Path) -> Path:
    """The folder under ``extracted`` that holds the city folders (``<City>/images/RGB``)."""
    for folder in [extracted, *sorted(p for p in extracted.rglob("*") if p.is_dir())]:
        if any((folder / city / "images" / "RGB").is_dir() for cities in CITIES.values() for city in cities):
            return folder
    raise FileNotFoundError(
        f"{extracted}: no folder holding <City>/images/RGB/ (the layout of EarthMiss: "
        "<City>/images/{RGB,SAR}/ and <City>/masks/ for the 13 cities)"
    )


def _with_suffix(folder: Path, stem: str) -> Path:
    """``folder/<stem>.tif`` or ``.png``, whichever exists (the ``.tif`` path when neither does)."""
    for suffix in SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return folder / f"{stem}{SUFFIXES[0]}"


@register_dataset("earthmiss")
class EarthMiss(ManualArchiveSource):
    """EarthMiss: optical + SAR -> 8 land-cover classes, split by city (see the module docstring).

    The user downloads the data set from Zenodo record 17231107 (or the Baidu link of the
    EarthMiss README) and places the archive unchanged as ``data/raw/earthmiss/EarthMiss.zip``.
    ``download()`` checks it (no MD5 is published: the first verified copy's is recorded) and
    extracts it; ``prepare()`` tiles every image of the train, val and test cities.
    """

    config_type = EarthMissConfig
    config: EarthMissConfig

    classes = CLASSES
    palette = PALETTE
    modalities = MODALITIES
    # 8-bit SAR of unstated scaling, treated as intensity by the speckle scenario (docs/datasets.md)
    sar_modalities = {"sar": "linear"}
    ignore_index = IGNORE
    display_bands = {"optical": (0, 1, 2), "sar": (0,)}
    homepage = HOMEPAGE
    citation = CITATION
    how_to_obtain = (
        f"Download EarthMiss from Zenodo (https://zenodo.org/records/17231107, or the Baidu link of the EarthMiss "
        f"README) and save the archive as {ARCHIVE}"
    )

    def archives(self) -> list[ManualArchive]:
        return [ManualArchive(ARCHIVE, CONTAINS, md5=None)]

    def images(self, root: Path) -> dict[str, list[tuple[str, str]]]:
        """``{prepared split: [(city, image id), ...]}`` (sorted per city, cut to ``max_images``); a
        missing city folder or a city without images is a FileNotFoundError listing every one."""
        out: dict[str, list[tuple[str, str]]] = {}
        missing = []
        for split, cities in CITIES.items():
            out[split] = []
            for city in cities:
                folder = root / city / "images" / "RGB"
                ids = sorted({p.stem for p in folder.glob("*") if p.suffix.lower() in SUFFIXES})
                if not ids:
                    missing.append(f"{folder}/<id>.tif|png")
                out[split] += [(city, i) for i in ids[: self.config.max_images]]
        if missing:
            raise FileNotFoundError(
                f"{root}: {len(missing)} of the 13 cities have no optical image:\n  "
                + "\n  ".join(missing)
                + f"\nthe archive is incomplete; {self.how_to_obtain} again ({self.homepage})"
            )
        return out

    def files(self, root: Path, city: str, image: str) -> dict[str, Path]:
        """``{"optical", "sar", "label"}`` paths of image ``image`` of ``city``."""
        return {
            "optical": _with_suffix(root / city / "images" / "RGB", image),
            "sar": _with_suffix(root / city / "images" / "SAR", f"{image}_SAR"),
            "label": _with_suffix(root / city / "masks", f"{image}_mask"),
        }

    def check_files(self, root: Path, images: Mapping[str, list[tuple[str, str]]]) -> None:
        """A FileNotFoundError listing every missing SAR image or mask (the first 20 and a count),
        before any pixel is read."""
        paths = [path for pairs in images.values() for pair in pairs for path in self.files(root, *pair).values()]
        self.check_present(
            root, paths, "missing (every optical image has a <id>_SAR and a <id>_mask file, .tif or .png)"
        )

    def scene(self, root: Path, split: str, city: str, image: str) -> Scene:
        """One image: optical, SAR and the mask (with the padding the decoder needs)."""
        files = self.files(root, city, image)
        inputs = {m: RasterLayer(files[m], expect_bands=c) for m, c in MODALITIES.items()}
        label = MaskLayer(RasterLayer(files["label"]), inputs["optical"], inputs["sar"])
        return Scene(f"{city}/{image}", split, {m: inputs[m] for m in self.modalities}, label, decode_earthmiss_mask)

    def prepare(self, out_dir: Path) -> Path:
        self.check_downloaded()
        root = find_root(self.extracted(self.archives()[0]))
        images = self.images(root)
        self.check_files(root, images)
        scenes = [self.scene(root, split, *pair) for split, pairs in images.items() for pair in pairs]
        tags = {f"{city}/{image}": [city] for pairs in images.values() for city, image in pairs}
        source = {
            **self.config.model_dump(),
            "archive": ARCHIVE,
            "layout": "Yi-Heng/EarthMiss data/EarthMiss.py at d57c3b37d67300d56d58ac47d4cbf08f226596c8",
            "cities": {split: list(cities) for split, cities in CITIES.items()},
            "images": {split: len(pairs) for split, pairs in images.items()},
        }
        return self.write_scenes(out_dir, scenes, source, tags=tags)
