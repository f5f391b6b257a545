"""Data model and loaders.

:class:`Dataset` and :class:`IdMap` hold the data; :func:`read_interactions` reads CSV, TSV,
DAT and Parquet files; the reference loaders read MovieLens and Last.fm; :func:`load_sample`
and :func:`synthetic` generate data in code; :func:`load_dataset` loads any of them by name.
"""

from __future__ import annotations

from tastebud.data.catalog import DATASETS, load_dataset
from tastebud.data.dataset import Dataset
from tastebud.data.files import read_interactions
from tastebud.data.idmap import IdMap
from tastebud.data.reference import (
    data_home,
    load_lastfm_2k,
    load_movielens_100k,
    load_movielens_100k_fold,
    load_movielens_latest,
)
from tastebud.data.sample import load_sample
from tastebud.data.synthetic import synthetic
from tastebud.data.validate import SkippedRowsWarning

__all__ = [
    "DATASETS",
    "Dataset",
    "IdMap",
    "SkippedRowsWarning",
    "data_home",
    "load_dataset",
    "load_lastfm_2k",
    "load_movielens_100k",
    "load_movielens_100k_fold",
    "load_movielens_latest",
    "load_sample",
    "read_interactions",
    "synthetic",
]
