"""Prepare one data set: ``python -m benchmark.prepare --dataset synthetic``.

Reads the data set's section of params.yaml (only that: the configure stage checks the whole
file) and its raw files (``data/raw/<dataset>/``, put there by ``python -m benchmark.download``)
and writes ``data/prepared/<dataset>/`` with a ``preview.png`` of the first training tiles.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark import errors
from benchmark.data import PreparedDataset, read_meta
from benchmark.data.section import load_source
from benchmark.layout import PARAMS_FILE, PREVIEW_FILE, prepared_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--raw-dir", type=Path, default=None, help="default data/raw/<dataset>")
    parser.add_argument("--out", type=Path, default=None, help="default data/prepared/<dataset>")
    args = parser.parse_args(argv)
    source = load_source(args.params, args.dataset, args.raw_dir)  # its section only: configure checks the rest
    out = source.prepare(args.out or prepared_dir(args.dataset))
    meta = read_meta(out)
    preview = PreparedDataset(out, "train")
    figure = preview.plot(
        range(min(4, len(preview))), out / PREVIEW_FILE, bands=source.display_bands, palette=source.palette
    )
    import matplotlib.pyplot as plt  # loaded by plot (which picks the Agg backend first)

    plt.close(figure)  # written: pyplot need not keep it (a caller may prepare many data sets)
    print(f"prepared {args.dataset}: {meta['splits']} tiles, modalities {meta['modalities']} -> {out}")
    return 0


if __name__ == "__main__":
    errors.run(main)
