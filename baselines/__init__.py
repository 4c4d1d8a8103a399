"""Baseline methods, one module each. Importing this package registers them all."""

from baselines import imlt, m3l, magic, muss  # noqa: F401
