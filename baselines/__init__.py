"""Baseline methods, one module each (baselines/<name>.py registers <name>; the list of
built-in methods is benchmark/methods/catalog.py)."""
