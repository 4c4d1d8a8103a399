"""Floors: reference models that need no deep learning (family ``floor``), one module each
(docs/floors.md; the list of built-in methods is benchmark/methods/catalog.py)."""
