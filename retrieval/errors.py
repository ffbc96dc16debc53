"""The project's error types: one base class, so callers (the CLI, an app, a service) can tell a
problem with the user's input, data, config or files from a bug.

Every error raised on purpose for bad input derives from :class:`FusionLTRError` and says what was
expected and what was found. Each also derives from the matching built-in (``ValueError``,
``FileNotFoundError``, ...), so code that caught those keeps working. Anything else that escapes is a
bug: the CLI shows its traceback.
"""

from __future__ import annotations


class FusionLTRError(Exception):
    """Base class of every error fusion-ltr raises for bad input, data, config or missing files."""


class UsageError(FusionLTRError, ValueError):
    """A value, argument or combination of settings that cannot work."""


class InputError(UsageError):
    """A caller's request input that cannot be used (the Scorer's and the service's arguments); ``field``
    says where, as a request path: ``query``, ``documents[3].timestamp``, ``top_n``."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field


class MissingInputError(FusionLTRError, FileNotFoundError):
    """A file or folder a step needs is absent; the message says which command makes it."""


class UnknownKeyError(FusionLTRError, KeyError):
    """A name (a split, a feature, a query id) that is not among the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
