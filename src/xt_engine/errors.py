"""Errors raised by the engine.

Every error carries a message that says what went wrong *and* how to fix it, so the CLI can
print one line and exit with status 2, and the napari plugin can show it as a notification.
"""

from __future__ import annotations


class XTError(Exception):
    """Base class of all engine errors. ``str(err)`` is one line: problem, then the fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} (fix: {fix})" if fix else problem)


class ConfigError(XTError, ValueError):
    """A model or run configuration names an unknown choice or holds a bad value."""


class InputError(XTError, ValueError):
    """An input image, ROI or path cannot be used."""


class CheckpointError(XTError, ValueError):
    """A checkpoint or weights file is missing, corrupt or does not fit the model."""


class XTWarning(UserWarning):
    """Something the run did not expect but can go on with (e.g. an image without a pixel
    size for a model with one); ``xt`` prints it as one ``warning:`` line."""


class Cancelled(XTError):
    """A run was stopped through its cancel token."""

    exit_code = 130
