"""Loaders for the public reference data sets (MovieLens, Last.fm HetRec 2011).

The data are not shipped (their licences forbid it); loaders read them from a folder:
``TASTEBUD_DATA`` if set, else a ``shared/data`` folder next to the working directory or the
project checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tastebud.data.dataset import Dataset
from tastebud.data.files import read_interactions, read_table
from tastebud.errors import DataError

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def data_home() -> Path:
    """The folder holding reference data sets (``TASTEBUD_DATA`` overrides the search)."""
    env = os.environ.get("TASTEBUD_DATA")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    package = Path(__file__).resolve()
    candidates = [here / "shared" / "data", here.parent / "shared" / "data"]
    candidates += [p / "shared" / "data" for p in package.parents]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return here.parent / "shared" / "data"


def _folder(path: str | Path | None, default: str) -> Path:
    folder = Path(path) if path is not None else data_home() / default
    if not folder.is_dir():
        raise DataError(
            f"data folder not found; set TASTEBUD_DATA to the folder holding '{default}' or "
            "pass its path",
            source=str(folder),
        )
    return folder


def _pipe_table(path: Path, names: list[str], encoding: str) -> pd.DataFrame:
    frame, _lines, _ = read_table(path, sep="|", header=False, names=names, encoding=encoding)
    return frame


def load_movielens_100k(path: str | Path | None = None, *, ratings_file: str = "u.data") -> Dataset:
    """MovieLens 100K: 100,000 ratings (1-5) of 1,682 movies by 943 users, with timestamps.

    Item features: ``title``, ``release_date``, ``year`` and ``genres`` (``|``-joined). User
    features: ``age``, ``gender``, ``occupation``, ``zip`` and ``region`` (the zip's first
    digit, the US postal region; ``non-US`` for other codes). ``ratings_file`` picks one of the
    official splits' files (``u1.base``...) instead of ``u.data``.
    """
    folder = _folder(path, "ml-100k")
    n_flags = len(ML100K_GENRES)
    items = _pipe_table(
        folder / "u.item",
        ["item", "title", "release_date", "video_release_date", "url"]
        + [f"g{i}" for i in range(n_flags)],
        "latin-1",
    )
    flags = items[[f"g{i}" for i in range(n_flags)]].to_numpy() == "1"
    genre_names = np.array(ML100K_GENRES, dtype=object)
    items["genres"] = ["|".join(genre_names[row]) for row in flags]
    released = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce")
    items["release_date"] = released
    items["year"] = released.dt.year.astype("Int64")
    items["item"] = items["item"].astype(np.int64)
    items = items[["item", "title", "release_date", "year", "genres"]]

    users = _pipe_table(folder / "u.user", ["user", "age", "gender", "occupation", "zip"], "utf-8")
    users["user"] = users["user"].astype(np.int64)
    users["age"] = users["age"].astype(np.int64)
    # US zip codes start with their region (0 = north-east ... 9 = west); others are foreign.
    zip_text = users["zip"].astype(str)
    users["region"] = np.where(zip_text.str.match(r"^\d{5}$"), "zip" + zip_text.str[0], "non-US")
    return read_interactions(
        folder / ratings_file,
        names=["user", "item", "rating", "timestamp"],
        sep="\t",
        header=False,
        rating_range=(1, 5),
        users=users,
        items=items,
        name="ml-100k" if ratings_file == "u.data" else f"ml-100k/{ratings_file}",
    )


def load_movielens_100k_fold(
    fold: int | str, path: str | Path | None = None
) -> tuple[Dataset, pd.DataFrame]:
    """One of the official folds: ``fold`` 1-5 (``u1.base``/``u1.test``) or ``"a"``/``"b"``.

    Returns the training dataset (all 943 users and 1,682 movies known, with features) and the
    test interactions as a table with external ids.
    """
    folder = _folder(path, "ml-100k")
    train = load_movielens_100k(folder, ratings_file=f"u{fold}.base")
    full_test = read_interactions(
        folder / f"u{fold}.test",
        names=["user", "item", "rating", "timestamp"],
        sep="\t",
        header=False,
        rating_range=(1, 5),
    )
    return train, full_test.interactions


def load_movielens_latest(path: str | Path) -> Dataset:
    """A MovieLens "latest"-format folder: ``ratings.csv``, ``movies.csv``, optional ``tags.csv``.

    Item features: ``title``, ``genres`` (``|``-joined, as in the file) and ``tags`` (the
    distinct tags users gave the movie, ``|``-joined).
    """
    folder = _folder(path, "ml-latest-small")
    movies, _lines, _ = read_table(folder / "movies.csv", header=True)
    movies["movieId"] = movies["movieId"].astype(np.int64)  # the key shared with ratings.csv
    movies.loc[movies["genres"] == "(no genres listed)", "genres"] = ""
    tags_path = folder / "tags.csv"
    if tags_path.exists():
        tags, _lines, _ = read_table(tags_path, header=True)
        tags["movieId"] = tags["movieId"].astype(np.int64)
        joined = tags.groupby("movieId")["tag"].agg(lambda t: "|".join(sorted(set(t))))
        movies["tags"] = movies["movieId"].map(joined).fillna("")
    return read_interactions(
        folder / "ratings.csv",
        user="userId",
        item="movieId",
        rating="rating",
        timestamp="timestamp",
        rating_range=(0.5, 5),
        items=movies,
        name=folder.name,
    )


def load_lastfm_2k(path: str | Path | None = None) -> Dataset:
    """Last.fm HetRec 2011: play counts of 17,632 artists by 1,892 users (implicit weights).

    Item features: ``name`` (artist), ``url``. User features: ``friends`` (``|``-joined ids of
    the user's friends in the social graph).
    """
    folder = _folder(path, "hetrec2011-lastfm-2k")
    artists, _lines, _ = read_table(
        folder / "artists.dat", sep="\t", header=True, names=["item", "name", "url", "picture"]
    )
    artists["item"] = artists["item"].astype(np.int64)
    friends, _lines, _ = read_table(
        folder / "user_friends.dat", sep="\t", header=True, names=["user", "friend"]
    )
    friend_ids = friends["friend"].astype(str)
    grouped = friend_ids.groupby(friends["user"].astype(np.int64)).agg("|".join)
    users = pd.DataFrame({"user": grouped.index.to_numpy(), "friends": grouped.to_numpy()})
    return read_interactions(
        folder / "user_artists.dat",
        names=["user", "item", "weight"],
        sep="\t",
        users=users,
        items=artists[["item", "name", "url"]],
        name="lastfm-2k",
    )
