"""Errors raised by tastebud.

Every error a user can provoke with bad input is a :class:`TastebudError`, so the CLI and the
service can turn it into one clear line (exit code 2) or an HTTP 4xx instead of a traceback.
"""

from __future__ import annotations

import sys
import warnings


class TastebudError(Exception):
    """Base class of every error tastebud raises on purpose."""


class InvalidInputError(TastebudError, ValueError):
    """Arguments or data that cannot be used as given (wrong shape, range, type...)."""


class DataError(InvalidInputError):
    """A problem in input data, located as precisely as possible.

    The message reads ``file:line: column 'x': problem`` with whichever parts are known, so a
    user can open the file at the right line.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.line = line
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.source is not None:
            where = str(self.source)
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [where] if where else []
        if self.column is not None:
            parts.append(f"column '{self.column}'")
        parts.append(self.problem)
        return ": ".join(parts)


class UnknownIdError(TastebudError, LookupError):
    """A user or item id the model or dataset has never seen, under ``on_unknown="raise"``."""


class NotFittedError(TastebudError, RuntimeError):
    """A model method that needs a fitted model was called before ``fit``."""


class ModelFileError(TastebudError):
    """A saved model folder that is missing, corrupt, or written for another class/version."""


class ModelWarning(UserWarning):
    """A fit that went through, but whose result may not be what its user expects: data
    without timestamps read in a random order by a model that reads the order of a history,
    or a validation score below popularity's."""


def warn(message: str, category: type[Warning] = ModelWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside tastebud (the line of the
    user's code that called ``fit``, however deep inside tastebud the warning arose)."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("tastebud"):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
