"""What every fault-injection case shares: the failure it reports and the check of a clear error."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# A complete tiny configuration of the whole pipeline that runs in seconds on a CPU: what the fault
# cases run and what the tests use (tests/tiny.py).
TINY_PARAMS: dict[str, Any] = {
    "datasets": ["synthetic"],
    "runs": ["muss-uniform"],
    "seeds": [0],
    "method_modules": [],
    "method_params": {"muss": {}},
    "synthetic": {"seed": 0, "tile_size": 32, "num_train": 16, "num_test": 6},
    "train": {"steps": 6, "batch_size": 4, "warmup_steps": 2, "checkpoint_every": 2, "decoder_dim": 16, "lr": 0.003},
    "evaluate": {"batch_size": 4},
    "scenarios": {
        "seed": 0,
        "block_size": 8,
        "block_missing": [0.5],
        "pixel_missing": [0.25],
        "gaussian": [0.5],
        "salt_pepper": [0.1],
        "speckle": [0.5],
    },
    "report": {"reference": "muss-uniform", "bootstrap_samples": 200},
}


def configure_runs(params: Path) -> Path:
    """Run the configure stage on ``params`` into ``<its folder>/configs``: that folder (one
    ``<run>.json`` per listed run, what ``train --config`` and ``evaluate --config`` read)."""
    from benchmark import configure

    out = params.parent / "configs"
    with contextlib.redirect_stdout(io.StringIO()):
        if configure.main(["--params", str(params), "--out", str(out)]) != 0:
            raise RuntimeError(f"{params}: the configure stage failed")
    return out


class NotSurvived(AssertionError):
    """A case where the pipeline did not survive the fault: a wrong, vague or missing error, or a lost file."""


def expect_error(
    fn: Callable[[], Any], exc_types: type[BaseException] | tuple[type[BaseException], ...], must_name: Iterable[str]
) -> BaseException:
    """Call ``fn``; it must raise one of ``exc_types`` whose message contains every string of ``must_name``
    (the file, key or value the user must see). Returns the error; raises :class:`NotSurvived` otherwise."""
    try:
        fn()
    except exc_types as err:
        message = str(err)
        missing = [s for s in must_name if str(s) not in message]
        if missing:
            raise NotSurvived(f"error does not name {missing}: {type(err).__name__}: {message}") from err
        return err
    except Exception as err:  # the wrong kind of error is a failure too
        raise NotSurvived(f"expected {exc_types}, got {type(err).__name__}: {err}") from err
    raise NotSurvived(f"no error raised (expected {exc_types} naming {list(must_name)})")
