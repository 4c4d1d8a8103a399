"""Model size and inference cost of every registered method, as a table:
``python -m benchmark.efficiency [--backbone tiny] [--size 64] [--classes 6]
[--channels rgb=3 dsm=1 nir=1] [--decoder-dim 64] [--methods muss ...]`` prints a markdown
table, then one ``params_<method>=<int>`` and one ``gflops_<method>=<float>`` line per method.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from benchmark import errors
from benchmark.efficiency import DEFAULT_CHANNELS, inference_gflops, parameter_count
from benchmark.methods.catalog import create_method, get_method_class, list_methods


def _channel_item(item: str) -> tuple[str, int]:
    """``"rgb=3"`` -> ``("rgb", 3)``; anything else is an argparse error naming the item."""
    name, sep, value = item.partition("=")
    try:
        channels = int(value)
    except ValueError:
        channels = 0
    if not sep or not name or channels <= 0:
        raise argparse.ArgumentTypeError(f"{item!r}: expected name=channels with a positive integer")
    return name, channels


def efficiency_table(
    methods: Sequence[str],
    channels: Mapping[str, int],
    num_classes: int,
    size: tuple[int, int],
    backbone: str = "tiny",
    decoder_dim: int = 64,
    device: str = "cpu",
) -> list[dict]:
    """One row ``{"method", "params", "gflops"}`` per method (untrained weights, ``pretrained=False``)."""
    rows = []
    for name in methods:
        method = create_method(
            name,
            modalities=dict(channels),
            num_classes=num_classes,
            backbone=backbone,
            pretrained=False,
            decoder_dim=decoder_dim,
        ).to(device)
        rows.append(
            {
                "method": name,
                "params": parameter_count(method),
                "gflops": inference_gflops(method, channels, size, device),
            }
        )
    return rows


def to_markdown(rows: list[dict], size: tuple[int, int]) -> str:
    """GitHub table: parameters and their difference to the first row in millions, GFLOPs at ``size``."""
    height, width = size
    lines = [
        f"| Method | Params (M) | Δ params vs {rows[0]['method']} (M) | GFLOPs at {height}x{width} |",
        "|:--|--:|--:|--:|",
    ]
    for row in rows:
        delta = (row["params"] - rows[0]["params"]) / 1e6
        lines.append(f"| {row['method']} | {row['params'] / 1e6:.3f} | {delta:+.3f} | {row['gflops']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: the markdown table, then ``params_<method>=`` / ``gflops_<method>=`` lines."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.efficiency", description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="tiny", help="'tiny' or a timm model name")
    parser.add_argument("--size", type=int, default=64, help="input height = width in pixels")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument(
        "--channels",
        nargs="+",
        type=_channel_item,
        default=list(DEFAULT_CHANNELS.items()),
        metavar="NAME=C",
        help="modalities and their channel counts (default: rgb=3 dsm=1 nir=1)",
    )
    parser.add_argument("--decoder-dim", type=int, default=64)
    parser.add_argument(
        "--methods", nargs="+", default=None, help="default: every registered method, the reference family (muss) first"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    channels = dict(args.channels)
    if len(channels) != len(args.channels):
        parser.error(f"argument --channels: a modality is listed more than once: {[n for n, _ in args.channels]}")
    if args.size <= 0 or args.classes <= 0 or args.decoder_dim <= 0:
        parser.error("--size, --classes and --decoder-dim must be positive")
    # the reference family first (the Δ column's baseline), then by name (sorted is stable)
    methods = args.methods or sorted(list_methods(), key=lambda name: get_method_class(name).family != "reference")
    size = (args.size, args.size)
    try:
        rows = efficiency_table(methods, channels, args.classes, size, args.backbone, args.decoder_dim, args.device)
    except KeyError as err:  # unknown method name
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 1
    print(to_markdown(rows, size), end="")
    print()
    for row in rows:
        print(f"params_{row['method']}={row['params']}")
        print(f"gflops_{row['method']}={row['gflops']!r}")
    return 0


if __name__ == "__main__":
    errors.run(main)
