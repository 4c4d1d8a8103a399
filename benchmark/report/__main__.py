"""``python -m benchmark.report``: see :mod:`benchmark.report`."""

from benchmark.report import main

raise SystemExit(main())
