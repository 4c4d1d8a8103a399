"""Prepare one data set: ``python -m benchmark.prepare --dataset synthetic``.

Reads the data set's section of params.yaml and its raw files (``data/raw/<dataset>/``, put
there by ``python -m benchmark.download``) and writes ``data/prepared/<dataset>/`` with a
``preview.png`` of the first training tiles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.config import PARAMS_FILE, load_params, section
from benchmark.data import PreparedDataset, build_source, read_meta
from benchmark.layout import prepared_dir

PREVIEW_FILE = "preview.png"  # a few training tiles, every modality and the label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--raw-dir", type=Path, default=None, help="default data/raw/<dataset>")
    parser.add_argument("--out", type=Path, default=None, help="default data/prepared/<dataset>")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    source = build_source(args.dataset, section(params, args.dataset, str(args.params)), args.raw_dir)
    out = source.prepare(args.out or prepared_dir(args.dataset))
    meta = read_meta(out)
    preview = PreparedDataset(out, "train")
    preview.plot(range(min(4, len(preview))), out / PREVIEW_FILE, bands=source.display_bands, palette=source.palette)
    print(f"prepared {args.dataset}: {meta['splits']} tiles, modalities {meta['modalities']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
