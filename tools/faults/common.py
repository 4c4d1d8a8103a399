"""What every fault-injection case shares: the failure it reports and the check of a clear error.

The tiny configuration the cases run is the test suite's (:mod:`tests.tiny`): run the harness from
a checkout (``python -m tools.faults``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tests.tiny import TINY_PARAMS, configure_runs

__all__ = ["TINY_PARAMS", "NotSurvived", "configure_runs", "expect_error"]


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
