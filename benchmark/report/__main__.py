"""``python -m benchmark.report``: see :mod:`benchmark.report`."""

from benchmark import errors
from benchmark.report import main

errors.run(main)
