"""Floors: reference models that need no deep learning (family ``floor``), one module each.
Importing this package registers them all (docs/floors.md)."""

from floors import ndwi, pixel_forest, sar_otsu  # noqa: F401
