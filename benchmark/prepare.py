"""Prepare one data set: ``python -m benchmark.prepare --dataset synthetic``.

Reads the data set's section of params.yaml and writes ``data/prepared/<dataset>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.config import PARAMS_FILE, load_params, prepared_dir, section
from benchmark.data import get_preparer, read_meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--out", type=Path, default=None, help="default data/prepared/<dataset>")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    preparer = get_preparer(args.dataset)
    dataset_params = section(params, args.dataset, str(args.params)) or {}
    out = preparer(dataset_params, args.out or prepared_dir(args.dataset))
    meta = read_meta(out)
    print(f"prepared {args.dataset}: {meta['splits']} tiles, modalities {meta['modalities']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
