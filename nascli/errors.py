"""One exception family for everything a user can get wrong.

Each error carries a one-line message naming the file / line / option at fault and a hint naming the
fix. The CLI maps the classes to exit codes in one place (`nascli.cli.app`); library code only raises.
"""

from __future__ import annotations


class NascliError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(NascliError):
    """A nonsensical option or combination of options."""

    exit_code = 2


class InputError(NascliError):
    """Bad user input: a list file, an image, a recipe, an encoding, a checkpoint."""

    exit_code = 3


class ConfigError(InputError):
    """A recipe or option value that does not validate."""


class EncodingError(InputError):
    """An architecture encoding that is malformed or out of range."""


class DataError(InputError):
    """A list file, image or mask that cannot be used."""


class CheckpointError(InputError):
    """A checkpoint that is corrupt, untrusted or does not fit the model."""


class CheckFailed(NascliError):
    """A verification the user asked for found problems (data check, export tolerance)."""

    exit_code = 4


class RunDirError(NascliError):
    """The run directory is locked, read-only, or lacks a prerequisite step."""

    exit_code = 5


class Interrupted(NascliError):
    """The user pressed Ctrl-C; the state on disk is resumable."""

    exit_code = 130
