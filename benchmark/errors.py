"""User mistakes, and how a ``python -m benchmark.<command>`` reports them: one line, exit status 2.

A :class:`UserError` is a mistake the user can fix: a bad or unknown value in params.yaml, a
missing, damaged or stale file, a run not trained yet. Its message names the file, key or value,
says what is wrong and what to do. The error classes that carry such messages mix it in
(``class ParamsError(UserError)``, ``class ChecksumError(UserError, ValueError)``), so callers keep
catching the built-in type. A missing file (``FileNotFoundError``) counts as one too.

:func:`run` is every command's ``__main__``: it prints a user mistake as ``error: <message>`` on
one line of stderr and exits with status 2. Anything else is a bug and keeps its traceback, and
so does a user mistake with ``--debug`` on the command line or ``IMSS_DEBUG=1`` in the environment.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

DEBUG_FLAG = "--debug"
DEBUG_ENV = "IMSS_DEBUG"  # IMSS_DEBUG=1: tracebacks for user mistakes too
USER_ERROR_STATUS = 2  # what argparse exits with on a bad command line


class UserError(Exception):
    """A mistake the user can fix; the message says which file, key or value, and what to do."""

    def __str__(self) -> str:  # a KeyError subclass would quote the message
        return str(self.args[0]) if self.args else ""


class DamagedFileError(UserError, ValueError):
    """A file that exists but is not what it should be: truncated, not JSON, or another run's."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)


def did_you_mean(value: object, known: Iterable[str]) -> str:
    """``"; did you mean 'sgma-complete'?"`` for the closest of ``known`` to a misspelt ``value``
    (:func:`difflib.get_close_matches`, its default cutoff 0.6), else ``""``: to end a message."""
    close = difflib.get_close_matches(str(value), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (continuation lines joined with ``" | "``)."""
    text = str(err) or type(err).__name__
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Call ``main(args)`` (the command line without ``--debug``) and exit with its status; a user
    mistake (:data:`USER_ERRORS`) exits 2 after one line on stderr, unless debugging is asked for."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        status = main(args)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {one_line(err)} (details: {DEBUG_FLAG} or {DEBUG_ENV}=1)", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
    sys.exit(status or 0)
