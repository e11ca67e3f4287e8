"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
import reprlib
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
        close = _closest(name, valid)
        hint = f"; did you mean {close!r}?" if close else ""
        choices = ", ".join(valid) if valid else "(none registered)"
        super().__init__(f"unknown {kind} {brief(name)}{hint or '.'} Valid {kind}s: {choices}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def closest_hint(name: str, valid: Iterable[str]) -> str:
    close = _closest(name, valid)
    return f" (did you mean {close!r}?)" if close else ""


def _closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``name``; None for a name far longer than any name (difflib would
    index all of it, and nothing is close to it anyway)."""
    if len(name) > MAX_ECHO:
        return None
    close = difflib.get_close_matches(name, list(valid), n=1)
    return close[0] if close else None


MAX_ECHO = 80  # characters of a user's value quoted in a message
MAX_MESSAGE = 2000  # characters of one error line (paths and lists of valid choices included)


class _Brief(reprlib.Repr):
    """reprlib with short limits, and huge integers described instead of written out (Python
    refuses to write an int of more than 4300 digits in decimal)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = MAX_ECHO
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 6
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # about 39 digits
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return repr(x)


_BRIEF = _Brief()


def brief(value: object) -> str:
    """``repr(value)`` cut to about MAX_ECHO characters, for quoting a user's value in an error:
    an op name, a word or a config value can be megabytes long, and the error must stay one
    readable line."""
    text = _BRIEF.repr(value)
    if len(text) > 2 * MAX_ECHO:  # a list of long strings
        text = f"{text[:2 * MAX_ECHO]}..."
    if isinstance(value, str) and len(value) > MAX_ECHO:
        text += f" ({len(value)} characters)"
    return text


def one_line(message: str) -> str:
    """``message`` as one line of at most about MAX_MESSAGE characters (what the CLI prints)."""
    text = " ".join(message.splitlines())
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters)"
    return text
