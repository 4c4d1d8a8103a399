"""A run's training configuration, ``configs/<run>.json``: what ``configure`` resolved from
params.yaml for one run, and all that its train and evaluate stages read of it.

The file holds the run's method (its name, the registered method that builds it, that method's
module and the digest of the module's code with the project files it imports), the method's
parameters, the resolved protocol and the ``train`` section. A train stage depends on its own file
alone among the configs, and imports its own method's module alone: editing or adding one method
changes the files of the runs that use it, so ``dvc repro`` reruns those runs and nothing else
(docs/adding_a_method.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.config import TrainConfig, from_mapping
from benchmark.errors import DamagedFileError, did_you_mean
from benchmark.io import read_json
from benchmark.layout import run_config_file
from benchmark.protocol import Protocol


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run's training configuration (``configs/<run>.json``)."""

    run: str  # <method>-<protocol>
    method: str  # as in the run's name: a registered method or a variant of one
    registered_method: str  # the registered method that builds it
    method_module: str  # the module that registers it (a run imports this one alone)
    method_code: str  # sha256 of that module and the project files it imports (benchmark.imports)
    method_files: list[str]  # those files, relative to the project root
    method_params: dict[str, Any]  # the constructor parameters from params.yaml
    protocol: Protocol
    train: TrainConfig

    def record(self) -> dict[str, Any]:
        """The JSON-ready form, as written to ``configs/<run>.json``."""
        out = dataclasses.asdict(self)
        out.update(protocol=self.protocol.record(), train=self.train.model_dump())
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str) -> RunConfig:
        """The config :meth:`record` wrote; a missing or bad field is a ``DamagedFileError`` naming ``where``."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in record]
        if missing:
            raise DamagedFileError(f"{where}: missing {missing}; run dvc repro (its configure stage rewrites it)")
        try:
            return cls(
                **{name: record[name] for name in names if name not in ("protocol", "train")},
                protocol=Protocol.from_record(record["protocol"]),
                train=from_mapping(TrainConfig, record["train"], f"{where}: train"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DamagedFileError(f"{where}: {err}; run dvc repro (its configure stage rewrites it)") from None


def read_run_config(run: str, path: Path | None = None) -> RunConfig:
    """Read run ``run``'s configuration from ``path`` (default ``configs/<run>.json``) and check that it
    is that run's."""
    path = path or run_config_file(run)
    if not path.is_file():
        configured = sorted(p.stem for p in path.parent.glob("*.json"))
        raise FileNotFoundError(
            f"{path}: run {run!r} is not configured; list it under runs in params.yaml and run "
            f"dvc repro (or python -m benchmark.configure){did_you_mean(run, configured)}"
        )
    config = RunConfig.from_record(read_json(path), str(path))
    if config.run != run:
        raise DamagedFileError(f"{path}: holds run {config.run!r}, not {run!r}")
    return config
