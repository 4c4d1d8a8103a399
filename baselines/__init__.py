"""Baseline methods, one module each. Importing this package registers them all."""

from baselines import muss  # noqa: F401
