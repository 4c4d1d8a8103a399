"""Embedded synthetic data set: Potsdam-like multimodal tiles made from a seed (no download).

Scenes are composed on a nominal ground grid (``gsd`` m per pixel) by painting, in this order:
low vegetation (background), roads (impervious strips), round tree crowns, building footprints
(rotated rectangles, kept off the roads), cars (small rectangles on roads, aligned with them)
and clutter (small patches on the ground). Each object draws its own appearance, and each
modality renders the class map with a physically motivated signal and its own blind spots:

* ``rgb`` (3 ch, reflectance in [0, 1]): colour per object. A fraction ``grey_roof_fraction``
  of roofs is drawn from the *same* grey distribution as asphalt, and tree and grass greens
  overlap. Nuisance: per-tile illumination, cast shadows of buildings and trees, noise.
  **Cannot separate** building vs impervious_surface (grey roofs); tree vs low_vegetation
  only in part.
* ``dsm`` (1 ch, nDSM: height above ground in m): ground 0, low vegetation 0, cars ~1.5,
  clutter 0-2, trees 3-15 (dome), buildings 6-20 (flat); plus a smooth terrain-normalisation
  error, noise and voids (nodata = NaN blobs). **Cannot separate** impervious_surface vs
  low_vegetation (both at ground level); building vs tree only in part (heights overlap).
* ``nir`` (1 ch, reflectance in [0, 1]): vegetation bright, the rest dark. Tree and grass share
  one distribution, roofs and roads share another. Same illumination and shadows as RGB.
  **Cannot separate** tree vs low_vegetation, building vs impervious_surface.
* ``sar`` (1 ch, optional, backscatter in dB = 10 log10 of linear intensity, floored at
  -40 dB): buildings very bright (double bounce), cars bright, trees medium (volume
  scattering), smooth ground dark (impervious, a little less for grass; water would be the
  darkest, but there is no water class). Multiplicative Gamma speckle with ``sar_looks`` looks.
  **Cannot separate** impervious_surface vs low_vegetation.

No single modality suffices; all together separate every class pair but car/clutter, which
stay partly confused. ``docs/synthetic.md`` documents the model and measured classifier scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from benchmark.config import NonNegativeInt, PositiveInt, Section
from benchmark.data.prepared import write_prepared
from benchmark.data.source import DatasetSource, register_dataset

IGNORE_INDEX = 255  # no synthetic pixel is unlabelled; the value the prepared format records

CLASSES: tuple[str, ...] = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
PALETTE = ("#FFFFFF", "#0000FF", "#00FFFF", "#00FF00", "#FFFF00", "#FF0000")  # the ISPRS label colours
MODALITIES: dict[str, int] = {"rgb": 3, "dsm": 1, "nir": 1}
SAR_CHANNELS = 1
IMPERVIOUS, BUILDING, LOW_VEGETATION, TREE, CAR, CLUTTER = range(6)


Fraction = Annotated[float, Field(ge=0, le=1)]


class SyntheticConfig(Section):
    """Size, scene content and nuisance levels (params.yaml ``synthetic``). Counts are means per
    64x64-pixel area."""

    where: ClassVar[str] = "synthetic"
    seed: NonNegativeInt = 0  # of the data set: train tiles from seed, test tiles from seed + 10000
    tile_size: PositiveInt = 64  # pixels per side (square tiles), >= 16
    num_train: PositiveInt = 200  # tiles in the training split
    num_test: PositiveInt = 50  # tiles in the test split
    with_sar: bool = False  # add the 4th modality "sar" (last)
    gsd: Annotated[float, Field(gt=0)] = 0.5  # ground sampling distance, m per pixel (sets object sizes in pixels)
    road_count: float = 1.5  # mean roads per 64 px of tile side (Poisson, at least 1)
    building_count: float = 3.5  # mean buildings per 64x64 px (Poisson)
    paved_yard_fraction: Fraction = 0.6  # probability that a building has a paved yard around it
    tree_count: float = 8.0  # mean tree crowns per 64x64 px (Poisson)
    car_count: float = 3.0  # mean cars per 64x64 px (Poisson, placed on roads)
    clutter_count: float = 4.0  # mean clutter patches per 64x64 px (Poisson)
    grey_roof_fraction: Fraction = 0.5  # probability that a roof is asphalt-grey in RGB (0..1)
    illumination_range: Annotated[float, Field(lt=1)] = 0.2  # per-tile brightness factor drawn in 1 +- this (ratio)
    shadow_strength: Fraction = 0.5  # fraction of light removed in cast shadows (0..1)
    sun_elevation_deg: float = 55.0  # sun elevation in degrees (azimuth is random per tile)
    rgb_noise: float = 0.03  # Gaussian noise std, reflectance units
    nir_noise: float = 0.03  # Gaussian noise std, reflectance units
    dsm_noise: float = 0.5  # Gaussian noise std, m
    dsm_terrain_error: float = 0.3  # amplitude of smooth ground-height error, m
    dsm_void_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.05  # fraction of DSM pixels that are voids (NaN), 0..1
    sar_looks: Annotated[float, Field(gt=0)] = 4.0  # equivalent number of looks (Gamma speckle shape)

    @model_validator(mode="after")
    def _room_for_objects(self) -> SyntheticConfig:
        if self.tile_size < 16:
            raise ValueError(f"need tile_size >= 16 (room for the scene's objects), not {self.tile_size}")
        return self


def _window(cy: float, cx: float, r: float, size: int) -> tuple[slice, slice]:
    """Pixel window covering a disc of radius ``r`` px around (cy, cx), clipped to the tile."""
    y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 2)
    x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 2)
    return slice(y0, y1), slice(x0, x1)


def _rect(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, hl: float, hw: float, th: float) -> np.ndarray:
    """Mask of a rectangle (half-length ``hl`` along angle ``th``, half-width ``hw``, px)."""
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(th) + dy * math.sin(th)
    v = -dx * math.sin(th) + dy * math.cos(th)
    return (np.abs(u) <= hl) & (np.abs(v) <= hw)


def _compose(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One scene -> (object id int32 [H, W], height float32 [H, W] in m, class per object id)."""
    size, px = cfg.tile_size, 1.0 / cfg.gsd  # px: pixels per metre
    scale, area = size / 64.0, (size / 64.0) ** 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    obj = np.zeros((size, size), np.int32)  # object 0: background low vegetation
    height = np.zeros((size, size), np.float32)
    classes, road_angle = [LOW_VEGETATION], {}

    def new(cls: int) -> int:
        classes.append(cls)
        return len(classes) - 1

    for _ in range(max(1, rng.poisson(cfg.road_count * scale))):
        th = rng.integers(2) * math.pi / 2 + rng.normal(0, 0.03) if rng.random() < 0.7 else rng.uniform(0, math.pi)
        cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
        mask = np.abs(-(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)) <= rng.uniform(2.0, 3.5) * px
        k = obj[mask] = new(IMPERVIOUS)
        road_angle[k] = th
    is_road = obj > 0
    for _ in range(rng.poisson(cfg.tree_count * area)):
        cy, cx = rng.uniform(0, size, 2)
        r, top = rng.uniform(1.5, 4.5) * px, rng.uniform(3.0, 15.0)
        win = _window(cy, cx, r, size)
        d2 = ((yy[win] - cy) ** 2 + (xx[win] - cx) ** 2) / r**2
        h = top * (0.7 + 0.3 * np.sqrt(np.clip(1.0 - d2, 0.0, 1.0)))
        mask = (d2 < 1.0) & (h > height[win])
        obj[win][mask], height[win][mask] = new(TREE), h[mask]
    first_road = road_angle[min(road_angle)]
    for _ in range(rng.poisson(cfg.building_count * area)):
        hl, hw, top = rng.uniform(4.0, 10.0) * px, rng.uniform(3.0, 7.0) * px, rng.uniform(6.0, 20.0)
        th = first_road if rng.random() < 0.6 else rng.uniform(0, math.pi)
        for _attempt in range(6):  # keep buildings off the roads
            cy, cx = rng.uniform(0, size, 2)
            win = _window(cy, cx, math.hypot(hl, hw), size)
            mask = _rect(yy[win], xx[win], cy, cx, hl, hw, th)
            if (mask & is_road[win]).sum() <= 0.05 * mask.sum():
                break
        if rng.random() < cfg.paved_yard_fraction:  # paved yard / sidewalk around the building
            margin = rng.uniform(1.0, 3.0) * px
            win = _window(cy, cx, math.hypot(hl, hw) + margin, size)
            yard = _rect(yy[win], xx[win], cy, cx, hl + margin, hw + margin, th) & ~is_road[win]
            yard &= np.asarray(classes)[obj[win]] != BUILDING
            obj[win][yard], height[win][yard] = new(IMPERVIOUS), 0.0
            mask = _rect(yy[win], xx[win], cy, cx, hl, hw, th)
        mask &= ~is_road[win]
        obj[win][mask], height[win][mask] = new(BUILDING), top
    road_pixels = np.flatnonzero(is_road & (height == 0))
    for _ in range(rng.poisson(cfg.car_count * area) if road_pixels.size else 0):
        cy, cx = np.divmod(road_pixels[rng.integers(road_pixels.size)], size)
        th = road_angle.get(int(obj[cy, cx]), 0.0) + rng.normal(0, 0.05)
        win = _window(cy, cx, 2.5 * px, size)
        mask = _rect(yy[win], xx[win], cy + 0.5, cx + 0.5, 2.25 * px, 0.9 * px, th) & is_road[win]
        mask &= height[win] == 0
        obj[win][mask], height[win][mask] = new(CAR), rng.uniform(1.4, 1.7)
    for _ in range(rng.poisson(cfg.clutter_count * area)):
        cy, cx = rng.uniform(0, size, 2)
        hl, hw = rng.uniform(0.75, 3.0, 2) * px
        win = _window(cy, cx, math.hypot(hl, hw), size)
        mask = _rect(yy[win], xx[win], cy, cx, hl, hw, rng.uniform(0, math.pi)) & (height[win] == 0)
        obj[win][mask], height[win][mask] = new(CLUTTER), rng.uniform(0.0, 2.0)
    return obj, height, classes


def _appearance(rng: np.random.Generator, cls: np.ndarray, grey_roofs: float) -> tuple[np.ndarray, ...]:
    """Per-object rgb [M, 3], nir [M] (reflectance) and sar [M] (dB) for classes ``cls`` [M]."""
    m = cls.size
    rgb, nir, sar = np.zeros((m, 3)), np.zeros(m), np.zeros(m)

    def grey(k: int) -> np.ndarray:  # asphalt, concrete and grey roofs: one distribution
        return rng.uniform(0.22, 0.50, (k, 1)) * [1.0, 1.0, 1.04] + rng.normal(0, 0.015, (k, 3))

    for c in range(len(CLASSES)):
        i = np.flatnonzero(cls == c)
        k = i.size
        if c == IMPERVIOUS:
            rgb[i], nir[i], sar[i] = grey(k), rng.uniform(0.10, 0.24, k), rng.normal(-18, 2, k)
        elif c == BUILDING:
            red = rng.uniform([0.42, 0.20, 0.16], [0.62, 0.30, 0.24], (k, 3))
            rgb[i] = np.where(rng.random((k, 1)) < grey_roofs, grey(k), red)
            nir[i], sar[i] = rng.uniform(0.10, 0.24, k), rng.normal(0, 2, k)
        elif c in (LOW_VEGETATION, TREE):
            base = [0.30, 0.44, 0.20] if c == LOW_VEGETATION else [0.20, 0.33, 0.15]
            rgb[i] = rng.uniform(0.8, 1.2, (k, 1)) * base + rng.normal(0, 0.02, (k, 3))
            nir[i] = rng.uniform(0.42, 0.65, k)
            sar[i] = rng.normal(-15, 2, k) if c == LOW_VEGETATION else rng.normal(-8, 2, k)
        elif c == CAR:
            rgb[i], nir[i], sar[i] = rng.uniform(0.05, 0.9, (k, 3)), rng.uniform(0.08, 0.4, k), rng.normal(-2, 3, k)
        else:
            rgb[i] = rng.uniform(0.3, 0.65, (k, 1)) * [1.0, 0.88, 0.72] + rng.normal(0, 0.04, (k, 3))
            nir[i], sar[i] = rng.uniform(0.15, 0.40, k), rng.normal(-10, 3, k)
    return rgb, nir, sar


def _smooth_field(rng: np.random.Generator, n: int, size: int, cell: int) -> np.ndarray:
    """Smooth random field in [0, 1], float32 [n, size, size], blobs of about ``cell`` px."""
    g = size // cell + 2
    coarse = rng.random((n, g, g))
    t = (np.arange(size) + 0.5) / cell
    i0 = t.astype(int)
    f = t - i0
    f = f * f * (3 - 2 * f)  # smoothstep interpolation
    rows = coarse[:, i0, :] * (1 - f)[:, None] + coarse[:, i0 + 1, :] * f[:, None]
    return (rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f).astype(np.float32)


def _shadow(height: np.ndarray, azimuth: float, cfg: SyntheticConfig) -> np.ndarray:
    """Cast-shadow mask bool [H, W]: a pixel is shaded if the ray towards the sun hits an object."""
    size, rise = height.shape[0], cfg.gsd * math.tan(math.radians(cfg.sun_elevation_deg))  # m per px
    sy, sx = math.sin(azimuth), math.cos(azimuth)
    shaded = np.zeros_like(height, bool)
    for k in range(1, min(size, math.ceil(float(height.max()) / rise)) + 1):
        dy, dx = round(k * sy), round(k * sx)
        if abs(dy) >= size or abs(dx) >= size:
            break
        src = height[max(dy, 0) : size + min(dy, 0), max(dx, 0) : size + min(dx, 0)]  # height at p + k*sun
        dst = (slice(max(-dy, 0), size + min(-dy, 0)), slice(max(-dx, 0), size + min(-dx, 0)))
        shaded[dst] |= src - k * rise > height[dst]
    return shaded


def generate_tiles(config: SyntheticConfig, num_tiles: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Make ``num_tiles`` tiles -> ({modality: float32 [N, C, H, W]}, label uint8 [N, H, W]).

    Modalities in :data:`MODALITIES` order (rgb, dsm, nir), plus ``"sar"`` last when
    ``config.with_sar``. Units: rgb and nir reflectance in [0, 1]; dsm height above ground in m
    with voids (nodata) as NaN (the only NaN anywhere); sar backscatter in dB (10 log10 of the
    speckled linear intensity, >= -40). Labels are indices into :data:`CLASSES` (no ignore
    pixels). Deterministic: the same (config, num_tiles, seed) gives bit-identical arrays (for a
    given NumPy version); rgb/dsm/nir do not depend on ``with_sar`` (sar draws its randomness last).
    Per-pixel work is vectorised in float32; only scene composition loops over tiles and objects.
    """
    if num_tiles < 1:
        raise ValueError(f"num_tiles must be >= 1, got {num_tiles}")
    rng, size, n = np.random.default_rng(seed), config.tile_size, num_tiles
    objs, heights, classes = [], [], []
    for _ in range(n):
        obj, height, cls = _compose(rng, config)
        objs.append(obj + len(classes))
        heights.append(height)
        classes += cls
    obj, height, cls = np.stack(objs), np.stack(heights), np.asarray(classes, np.uint8)
    rgb_tab, nir_tab, sar_tab = (t.astype(np.float32) for t in _appearance(rng, cls, config.grey_roof_fraction))
    light = rng.uniform(1 - config.illumination_range, 1 + config.illumination_range, (n, 1, 1)).astype(np.float32)
    shadows = np.stack([_shadow(height[i], rng.uniform(0, 2 * math.pi), config) for i in range(n)])
    light = light * (1.0 - np.float32(config.shadow_strength) * shadows)

    def noise(std: float, shape: tuple[int, ...]) -> np.ndarray:  # Gaussian, float32
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    rgb = np.moveaxis(rgb_tab[obj], -1, 1) * light[:, None] + noise(config.rgb_noise, (n, 3, size, size))
    nir = nir_tab[obj] * light + noise(config.nir_noise, (n, size, size))
    terrain = (2 * _smooth_field(rng, n, size, 32) - 1) * np.float32(config.dsm_terrain_error)
    dsm = height + terrain + noise(config.dsm_noise, (n, size, size))
    voids = _smooth_field(rng, n, size, 8)
    if config.dsm_void_fraction > 0:
        threshold = np.quantile(voids.reshape(n, -1), 1 - config.dsm_void_fraction, axis=1)
        dsm[voids > threshold[:, None, None]] = np.nan
    out = {
        "rgb": np.clip(rgb, 0, 1).astype(np.float32),
        "dsm": dsm[:, None].astype(np.float32),
        "nir": np.clip(nir, 0, 1)[:, None].astype(np.float32),
    }
    if config.with_sar:
        speckle = rng.standard_gamma(config.sar_looks, (n, size, size), dtype=np.float32) / np.float32(config.sar_looks)
        sar = sar_tab[obj] + 10 * np.log10(np.maximum(speckle, np.float32(1e-12)))
        out["sar"] = np.maximum(sar, -40.0)[:, None].astype(np.float32)
    return out, cls[obj]


@register_dataset("synthetic")
class Synthetic(DatasetSource):
    """The embedded Potsdam-like data set (see the module docstring and docs/synthetic.md).

    ``params``: ``seed`` (int; train tiles from ``seed``, test tiles from ``seed + 10000``) and
    the fields of :class:`SyntheticConfig`. ``modalities`` gains ``sar`` with ``with_sar``.
    """

    config_type = SyntheticConfig
    config: SyntheticConfig

    classes = CLASSES
    palette = PALETTE  # the classes mirror ISPRS
    modalities = MODALITIES
    sar_modalities = {"sar": "db"}  # present with with_sar
    ignore_index = IGNORE_INDEX
    test_seed_offset = 10_000

    def __init__(self, params: Mapping[str, Any], raw_dir: Path | None = None) -> None:
        super().__init__(params, raw_dir)
        self.seed = self.config.seed
        if self.config.with_sar:
            self.modalities = {**MODALITIES, "sar": SAR_CHANNELS}

    def prepare(self, out_dir: Path) -> Path:
        splits = {}
        for split, count, seed in (
            ("train", self.config.num_train, self.seed),
            ("test", self.config.num_test, self.seed + self.test_seed_offset),
        ):
            inputs, labels = generate_tiles(self.config, count, seed)
            splits[split] = ({m: inputs[m] for m in self.modalities}, labels)  # the selected modalities
        source = {"generator": __name__, "seed": self.seed, **self.config.model_dump(exclude={"seed"})}
        return write_prepared(
            out_dir, splits, dataset=self.name, classes=self.classes, ignore_index=self.ignore_index, source=source
        )
