"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NasError(Exception):
    """Base class of every error caused by user input (names, files, config, data)."""


class ConfigError(NasError):
    """A config file, preset or ``--set`` override is invalid."""


class DataError(NasError):
    """A dataset is missing or malformed."""


class CheckpointError(NasError):
    """A checkpoint cannot be read, or does not match the run."""


class GenotypeError(NasError):
    """A genotype is malformed."""


class PluginError(NasError):
    """A plugin failed to load or registered something invalid."""


class UnknownNameError(NasError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        choices = ", ".join(valid) if valid else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}{hint or '.'} Valid {kind}s: {choices}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def closest_hint(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
