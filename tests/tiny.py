"""The tiny configuration of the whole pipeline that tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "datasets": ["synthetic"],
    "methods": ["muss"],
    "seeds": [0],
    "method_modules": [],
    "method_params": {"muss": {}},
    "synthetic": {"seed": 0, "tile_size": 32, "num_train": 16, "num_test": 6},
    "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 2, "decoder_dim": 16, "lr": 0.003},
    "evaluate": {"batch_size": 4},
}


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
