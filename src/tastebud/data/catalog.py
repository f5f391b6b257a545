"""Named data sets for the CLI and notebooks: ``load_dataset("ml-100k")``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tastebud.data.dataset import Dataset
from tastebud.data.reference import data_home, load_lastfm_2k, load_movielens_100k
from tastebud.data.sample import load_sample
from tastebud.data.synthetic import synthetic
from tastebud.errors import InvalidInputError


@dataclass(frozen=True)
class NamedDataset:
    name: str
    description: str
    load: Callable[[], Dataset]
    folder: str | None = None  # under data_home(), for reference data

    def available(self) -> bool:
        return self.folder is None or (data_home() / self.folder).is_dir()

    def location(self) -> str:
        return "built in" if self.folder is None else str(Path(data_home()) / self.folder)


DATASETS: dict[str, NamedDataset] = {
    d.name: d
    for d in (
        NamedDataset(
            "sample", "music store: 300 listeners, 60 albums, 1-5 ratings (generated)", load_sample
        ),
        NamedDataset(
            "synthetic",
            "power-law clusters: 1,000 users, 500 items, ~20K ratings (generated)",
            synthetic,
        ),
        NamedDataset(
            "ml-100k",
            "MovieLens 100K: 100K ratings, 943 users, 1,682 movies",
            load_movielens_100k,
            "ml-100k",
        ),
        NamedDataset(
            "lastfm-2k",
            "Last.fm HetRec 2011: 92,834 play counts, 1,892 users, 17,632 artists",
            load_lastfm_2k,
            "hetrec2011-lastfm-2k",
        ),
    )
}


def load_dataset(name: str) -> Dataset:
    """Load a named data set (see :data:`DATASETS`)."""
    key = name.strip().lower()
    if key not in DATASETS:
        raise InvalidInputError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key].load()
