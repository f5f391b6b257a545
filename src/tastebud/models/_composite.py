"""Models made of other models (blends, hybrids): members named by spec, saved in
sub-folders ``members/0``, ``members/1``... next to the composite's own files."""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tastebud.errors import ModelFileError
from tastebud.models.base import Recommender
from tastebud.models.registry import from_spec


def row_scale(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and standard deviation (1 where it is 0), as columns: what
    :func:`standardize` maps ``s`` to ``(s - mean) / std`` with -- an increasing map, so a
    row's order is the same before and after."""
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return mean, np.where(std > 0, std, 1.0)


def standardize(scores: np.ndarray) -> np.ndarray:
    """Each row to zero mean and unit variance (members on different scales can mix)."""
    mean, std = row_scale(scores)
    return (scores - mean) / std


@dataclasses.dataclass(kw_only=True, eq=False)
class Composite(Recommender):
    """Base of models whose state includes fitted member models (``self._members``)."""

    if TYPE_CHECKING:  # set by _fit / load; not a hyper-parameter, so not a dataclass field
        _members: list[Recommender]

    @abc.abstractmethod
    def _member_specs(self) -> list[str]:
        """The members' model specs (``"name:k=v"``), in order."""

    def _make_members(self) -> list[Recommender]:
        return [from_spec(spec) for spec in self._member_specs()]

    def _scorable(self, users: np.ndarray) -> np.ndarray:
        # A user any member can answer (e.g. from attributes); the others fall back per member.
        return np.logical_or.reduce([m._scorable(users) for m in self._members])

    def save(self, path: str | Path) -> Path:
        folder = super().save(path)
        for i, model in enumerate(self._members):
            model.save(folder / "members" / str(i))
        return folder

    def _restore_parts(self, folder: Path) -> None:
        from tastebud.models import load as load_any

        members = folder / "members"
        try:
            self._members = [load_any(members / str(i)) for i in range(len(self._member_specs()))]
        except ModelFileError as err:
            raise ModelFileError(f"{folder}: a member model is missing or broken: {err}") from None
