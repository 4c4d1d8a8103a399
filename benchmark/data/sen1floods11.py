"""Sen1Floods11 (Bonafilia et al., CVPRW 2020): Sentinel-1 + Sentinel-2 flood water segmentation.

The hand-labelled part: 446 chips of 512 x 512 px (about 10 m) from 11 flood events, each with

* ``S1Hand/<event>_<chip>_S1Hand.tif``: Sentinel-1 GRD backscatter in dB, float32, bands VV, VH
  (NaN = no data) -> modality ``s1`` (2 channels);
* ``S2Hand/<event>_<chip>_S2Hand.tif``: Sentinel-2 L1C top-of-atmosphere reflectance x 1e4,
  int16, 13 bands B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10, B11, B12 (0 = no data) ->
  modality ``s2`` (13 channels, in that order);
* ``LabelHand/<event>_<chip>_LabelHand.tif``: int16, -1 no data, 0 not water, 1 water ->
  classes ``not_water``, ``water``; -1 -> ``ignore_index``.

NaN: the S1 chips mark no data with NaN (the released files tag NaN as their nodata value, and
this reader treats NaN as nodata in ``s1`` even in a chip without the tag: ``nan_nodata``). The
S2 and label chips are integer files, so a NaN cannot occur there; +-inf in any chip is a
corrupt pixel (an error naming the file, band and pixel).

:class:`Sen1Floods11` downloads the v1.1 bucket layout over HTTPS
(``v1.1/data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand}/`` and the official split CSVs
``v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.csv``) and prepares the official
train / valid / test splits. :class:`Sen1Floods11Sample` turns the one real chip in
``../shared/data/sen1floods11_sample/`` into a tiny offline benchmark with spatially disjoint
train and test blocks.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from benchmark.config import PositiveInt, Section
from benchmark.data.download import GCS_API, ChecksumError, download_all, list_gcs_objects, sha256_file, verify_manifest
from benchmark.data.raster import Layer, RasterLayer, Scene, WindowLayer, tile_windows
from benchmark.data.source import DatasetSource, register_dataset
from benchmark.io import atomic_write_json, read_json
from benchmark.layout import MANIFEST_FILE

CLASSES = ("not_water", "water")
PALETTE = ("#D9CBA3", "#0072B2")  # sand for land, blue for water
MODALITIES = {"s1": 2, "s2": 13}
S1_BANDS = ("VV", "VH")
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
DISPLAY_BANDS = {"s1": (1,), "s2": (3, 2, 1)}  # VH; true colour B4, B3, B2
LAYERS = {"s1": "S1Hand", "s2": "S2Hand", "label": "LabelHand"}
HAND_LABELED = "data/flood_events/HandLabeled"  # under v1.1/ in the bucket and under data/raw/sen1floods11/
SPLITS_DIR = "splits/flood_handlabeled"
SPLIT_FILES = {"train": "flood_train_data.csv", "valid": "flood_valid_data.csv", "test": "flood_test_data.csv"}
HOMEPAGE = "https://github.com/cloudtostreet/Sen1Floods11"
CITATION = (
    "Bonafilia, D., Tellman, B., Anderson, T., Issenberg, E.: Sen1Floods11: a georeferenced dataset to train and "
    "test deep learning flood algorithms for Sentinel-1. CVPR Workshops, 2020."
)


def decode_water_label(window: np.ndarray, layer: Layer, ignore_index: int = 255) -> np.ndarray:
    """LabelHand ``float[1, h, w]`` (-1 / NaN no data, 0, 1) -> uint8 ``[h, w]`` (0, 1, ``ignore_index``)."""
    values = window[0]
    out = np.full(values.shape, ignore_index, np.uint8)
    out[values == 0] = 0
    out[values == 1] = 1
    bad = ~(np.isnan(values) | np.isin(values, (-1, 0, 1)))
    if bad.any():
        raise ValueError(f"{layer.name}: label values {np.unique(values[bad]).tolist()}, expected -1, 0 or 1")
    return out


def chip_layers(folder: Path, chip: str) -> tuple[dict[str, RasterLayer], RasterLayer]:
    """The s1, s2 and label layers of ``chip`` (``<event>_<id>``) in a folder of S1Hand/, S2Hand/, LabelHand/."""

    def layer(kind: str, **kwargs: Any) -> RasterLayer:
        return RasterLayer(folder / LAYERS[kind] / f"{chip}_{LAYERS[kind]}.tif", **kwargs)

    inputs = {
        "s1": layer("s1", expect_bands=2, expect_descriptions=S1_BANDS, nan_nodata=True),  # NaN = no data
        "s2": layer("s2", expect_bands=13, expect_descriptions=S2_BANDS),  # int16, 0 = no data (its tag)
    }
    return inputs, layer("label", expect_bands=1)


def read_split_csv(path: Path) -> list[str]:
    """Chip ids (``<event>_<id>``) of an official split CSV (rows ``<chip>_S1Hand.tif,<chip>_LabelHand.tif``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found (run the download stage)")
    chips = []
    with path.open(newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip():
                continue
            name = row[0].strip()
            if not name.endswith("_S1Hand.tif"):
                raise ValueError(f"{path}:{number}: expected '<chip>_S1Hand.tif' in the first column, got {name!r}")
            chips.append(name[: -len("_S1Hand.tif")])
    if not chips:
        raise ValueError(f"{path}: no chips listed")
    return chips


class Sen1Floods11Config(Section):
    """params.yaml ``sen1floods11``."""

    where: ClassVar[str] = "sen1floods11"
    tile_size: Annotated[int, Field(ge=1, le=512)] = 512  # px; chips are 512 x 512, so 512 keeps one tile per chip
    stride: PositiveInt = 512  # px between tile origins
    workers: PositiveInt = 8  # parallel downloads
    api: str = GCS_API  # Google Cloud Storage endpoint (a mirror with the same JSON API also works)
    bucket: str = "sen1floods11"  # the public bucket holding the data set
    version: str = "v1.1"  # folder of the bucket


class _Sen1Floods11Facts(DatasetSource):
    """What the full data set and its one-chip sample share: classes, colours, modalities, citation."""

    classes = CLASSES
    palette = PALETTE
    modalities = MODALITIES
    sar_modalities = {"s1": "db"}  # VV, VH backscatter in dB
    homepage = HOMEPAGE
    citation = CITATION
    bands = {"s1": S1_BANDS, "s2": S2_BANDS}
    display_bands = DISPLAY_BANDS


@register_dataset("sen1floods11")
class Sen1Floods11(_Sen1Floods11Facts):
    """Sen1Floods11 hand-labelled chips, official splits (see the module docstring).

    ``download()`` lists the bucket's objects (the JSON API gives each object's MD5), fetches
    the S1Hand, S2Hand and LabelHand chips and the split CSVs in parallel into
    ``data/raw/sen1floods11/`` (the bucket's layout under ``v1.1/``), resuming partial files and
    verifying each MD5, and records them in ``manifest.json``. ``prepare()`` re-verifies every
    file against the manifest, then tiles the chips of each split.
    """

    config_type = Sen1Floods11Config
    config: Sen1Floods11Config

    def download(self) -> Path:
        cfg = self.config
        origin = {"api": cfg.api, "bucket": cfg.bucket, "version": cfg.version}
        manifest = self.raw_dir / MANIFEST_FILE
        recorded = read_json(manifest) if manifest.is_file() else {}
        if recorded.get("origin") == origin and recorded.get("complete"):
            present = all(
                (self.raw_dir / path).is_file() and (self.raw_dir / path).stat().st_size == entry.get("size")
                for path, entry in recorded.get("files", {}).items()
            )
            if present:  # a finished download of this (frozen) version: no network needed; prepare re-hashes
                return self.raw_dir
        files = []
        for prefix in [f"{HAND_LABELED}/{layer}/" for layer in LAYERS.values()] + [f"{SPLITS_DIR}/"]:
            found = list_gcs_objects(cfg.bucket, f"{cfg.version}/{prefix}", api=cfg.api, strip_prefix=f"{cfg.version}/")
            if not found:
                raise FileNotFoundError(f"{cfg.api}/{cfg.bucket}/{cfg.version}/{prefix}: no objects listed")
            files += found
        verified = download_all(files, self.raw_dir, workers=cfg.workers)
        atomic_write_json(manifest, {"dataset": self.name, "origin": origin, "complete": True, "files": verified})
        return self.raw_dir

    def prepare(self, out_dir: Path) -> Path:
        csvs = {split: f"{SPLITS_DIR}/{name}" for split, name in SPLIT_FILES.items()}
        verify_manifest(self.raw_dir, paths=csvs.values())
        chips = {split: read_split_csv(self.raw_dir / path) for split, path in csvs.items()}
        needed = [
            f"{HAND_LABELED}/{layer}/{chip}_{layer}.tif"
            for c in chips.values()
            for chip in c
            for layer in LAYERS.values()
        ]
        verify_manifest(self.raw_dir, paths=needed)  # every file read below was downloaded and is unchanged
        scenes = []
        for split, names in chips.items():
            for chip in names:
                inputs, label = chip_layers(self.raw_dir / HAND_LABELED, chip)
                scenes.append(Scene(chip, split, inputs, label, decode_water_label))
        return self.write_scenes(
            out_dir, scenes, {"splits": "official flood_handlabeled CSVs", "version": self.config.version}
        )


class SampleConfig(Section):
    """params.yaml ``sen1floods11-sample``."""

    where: ClassVar[str] = "sen1floods11-sample"
    source_dir: str = "../shared/data/sen1floods11_sample"  # the real chip (never copied into the repository)
    chip: str = "Spain_7370579"  # the chip's name (its files' prefix in source_dir)
    block_size: PositiveInt = 128  # px; the chip is cut into blocks, each wholly train or wholly test
    test_every: Annotated[int, Field(ge=2)] = 4  # block (row r, col c) is a test block when (r + c) % test_every == 0
    tile_size: PositiveInt = 64  # px per side of the square tiles cut from each block
    stride: PositiveInt = 64  # px, within a block

    @model_validator(mode="after")
    def _blocks(self) -> SampleConfig:
        if not (self.tile_size <= self.block_size <= 512 and 512 % self.block_size == 0):
            raise ValueError("need 1 <= tile_size <= block_size, block_size dividing 512")
        return self


@register_dataset("sen1floods11-sample")
class Sen1Floods11Sample(_Sen1Floods11Facts):
    """One real Sen1Floods11 chip as a tiny two-sensor benchmark that runs offline.

    The 512 x 512 chip is cut into ``block_size`` blocks; block (r, c) is a test block when
    ``(r + c) % test_every == 0`` (defaults: 4 x 4 blocks of 128 px, 4 test blocks, one in every
    block row and column), the rest are train blocks, and tiles are cut inside blocks, so train
    and test tiles never share a pixel. They are neighbours on one scene, so this measures fitting
    one flood scene, not generalisation across events: a smoke test on real bytes, not a result
    to compare with the literature. ``download()`` reads nothing from the network: it checks the
    three files in ``source_dir`` against their published SHA-256 and records them in
    ``data/raw/sen1floods11-sample/manifest.json``.
    """

    config_type = SampleConfig
    config: SampleConfig

    sha256: ClassVar[dict[str, str]] = {  # of Spain_7370579, from the sample's README
        "S1Hand": "6c24bf791372da5e93450195eac8d676a7ef917884dfb479dafe4a565543b19a",
        "S2Hand": "16e997e6a7159fa11160faf00591da763eb37ac82faf806f7fe733991944a048",
        "LabelHand": "b81224e01540b262faffd82cb42762c3c77df2ba084a5fb82d49bae421dd12d4",
    }

    def _verified_files(self) -> dict[str, dict[str, Any]]:
        folder = Path(self.config.source_dir)
        files = {}
        for layer in LAYERS.values():
            path = folder / layer / f"{self.config.chip}_{layer}.tif"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: Sen1Floods11 sample not found; set {self.name}.source_dir in params.yaml to the folder "
                    f"holding S1Hand/, S2Hand/ and LabelHand/ (this project's CI has it in ../shared/data/)"
                )
            digest = sha256_file(path)
            expected = self.sha256.get(layer) if self.config.chip == "Spain_7370579" else None
            if expected and digest != expected:
                raise ChecksumError(f"{path}: SHA-256 {digest}, expected {expected}")
            files[f"{layer}/{path.name}"] = {"sha256": digest}  # no absolute path: same manifest on any machine
        return files

    def download(self) -> Path:
        atomic_write_json(
            self.raw_dir / MANIFEST_FILE,
            {"dataset": self.name, "files": self._verified_files(), "note": "read in place, not copied"},
        )
        return self.raw_dir

    def scenes(self) -> list[Scene]:
        """One scene per block, split by the block rule above."""
        cfg = self.config
        inputs, label = chip_layers(Path(cfg.source_dir), cfg.chip)
        _, height, width = label.shape
        scenes = []
        for r, c in tile_windows(height, width, cfg.block_size, cfg.block_size):
            by, bx = r // cfg.block_size, c // cfg.block_size
            split = "test" if (by + bx) % cfg.test_every == 0 else "train"

            def block(layer: Layer, r: int = r, c: int = c) -> WindowLayer:
                return WindowLayer(layer, r, c, cfg.block_size, cfg.block_size)

            blocks = {m: block(x) for m, x in inputs.items()}
            scenes.append(Scene(f"{cfg.chip}_block{by}{bx}", split, blocks, block(label), decode_water_label))
        return scenes

    def prepare(self, out_dir: Path) -> Path:
        manifest = self.raw_dir / MANIFEST_FILE
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{manifest}: not found; run `dvc repro` (its download stage: "
                f"`python -m benchmark.download --dataset {self.name}`)"
            )
        recorded = read_json(manifest).get("files", {})
        current = self._verified_files()
        if {k: v["sha256"] for k, v in current.items()} != {k: v.get("sha256") for k, v in recorded.items()}:
            raise ChecksumError(f"{manifest}: the sample files changed since the download stage verified them")
        scenes = self.scenes()
        blocks = {scene.name: scene.split for scene in scenes}
        return self.write_scenes(out_dir, scenes, {**self.config.model_dump(), "blocks": blocks}, progress=False)
