"""Fetch or verify one data set's raw files: ``python -m benchmark.download --dataset sen1floods11``.

Public data are downloaded (in parallel, resumable, each file verified); manually obtained
archives are checked, verified and extracted. Writes ``data/raw/<dataset>/manifest.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark import errors
from benchmark.data.section import load_source
from benchmark.io import remove_stale_temps
from benchmark.layout import MANIFEST_FILE, PARAMS_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--raw-dir", type=Path, default=None, help="default data/raw/<dataset>")
    args = parser.parse_args(argv)
    source = load_source(args.params, args.dataset, args.raw_dir)  # its section only: configure checks the rest
    remove_stale_temps(source.raw_dir / MANIFEST_FILE)  # what a killed download stage left
    raw = source.download()
    print(f"{args.dataset}: raw files verified in {raw}")
    return 0


if __name__ == "__main__":
    errors.run(main)
