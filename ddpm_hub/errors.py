"""The errors a command reports in one line (besides divergence and write errors, `files.WriteError`): bad input found
before any heavy work (`SetupError`, exit status 2) and a failed upload after a saved result (`PushError`)."""

from __future__ import annotations

import contextlib


class SetupError(ValueError):
    """Bad input found before training started: reported in one line, exit status 2."""


class PushError(RuntimeError):
    """Training succeeded and its output is saved, but the Hub upload failed after its retries."""


@contextlib.contextmanager
def reported_as_setup_errors():
    try:
        yield
    except ValueError as error:
        raise SetupError(str(error)) from error
