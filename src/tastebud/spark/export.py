"""A Spark-trained ALS written as a tastebud model folder.

The folder is what :meth:`tastebud.models.factorization.ALS.save` writes (``config.json``,
``arrays.npz``, ``MODEL_CARD.md``; the library's format version), made by the library's
own ``save`` from an ``ALS`` whose learned state is set from Spark's: the factors, the id
maps (ids as the data had them, sorted as the library sorts them, so internal indices
agree with Spark's), the seen-items matrix, item popularity and the confidence scheme's
per-item scales. ``tastebud.models.load`` reads it as any ``als`` model; ``recommend``
then lists what :meth:`~tastebud.spark.als.SparkALS.recommend` lists, and ``tastebud
serve`` can serve it.

A history folded in (the service's path for a user's latest events) is solved as tastebud
solves it: one λ for everyone (``reg``, or ``regParam × n̄ / 0.85`` when MLlib's value was
given) and tastebud's own confidences (the exponents without the shift, and their
normaliser). That is the problem the Spark fit approximates for its training users
(:mod:`tastebud.spark.als`).

The driver collects the factors, the id maps and the training pairs (the seen-items
matrix is part of the format): about ``(n_users + n_items) × n_factors × 4`` bytes plus
12 bytes per interaction.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from tastebud.data.idmap import IdMap
from tastebud.errors import InvalidInputError
from tastebud.spark.io import ITEM_INDEX, USER_INDEX

if TYPE_CHECKING:
    from tastebud.spark.als import SparkALS


def export_als(model: SparkALS, folder: str | Path) -> Path:
    """Write ``model`` (an implicit :class:`~tastebud.spark.als.SparkALS`) as a tastebud
    ``als`` model folder; returns the folder."""
    from tastebud import __version__
    from tastebud.models.factorization import ALS

    if not model.info.get("implicit", False):
        raise InvalidInputError(
            "only the implicit-feedback ALS exports as a tastebud model (tastebud's 'als'); "
            "the rating-prediction ALS has no tastebud counterpart"
        )
    p, info = model.params, model.info
    user_ids, item_ids = model.user_ids(), model.item_ids()
    n_users, n_items = len(user_ids), len(item_ids)
    pairs = model.ratings.select(USER_INDEX, ITEM_INDEX).toArrow()
    rows = pairs.column(USER_INDEX).to_numpy().astype(np.int64)
    cols = pairs.column(ITEM_INDEX).to_numpy().astype(np.int64)
    seen = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    seen.sum_duplicates()
    seen.sort_indices()
    item_counts = np.bincount(cols, minlength=n_items).astype(np.float64)
    item_factors = model.item_factors()
    als = ALS(
        n_factors=int(model.mllib.rank),
        reg=float(info["reg_equivalent"]),
        alpha=float(p.alpha),
        n_iterations=int(p.n_iterations),
        values=info["value_kind"],
        confidence=p.confidence,
        user_exponent=float(p.user_exponent),
        item_exponent=float(p.item_exponent),
        random_state=int(p.seed),
    )
    state: dict[str, Any] = {
        "users_": IdMap(user_ids),
        "items_": IdMap(item_ids),
        "seen_": seen,
        "popularity_": item_counts,
        "item_titles_": np.empty(0, dtype=object),
        "reg_": float(info["reg_equivalent"]),
        "reg_search_": np.empty((0, 2)),
        "item_scale_": np.maximum(item_counts, 1.0) ** float(p.item_exponent),
        "scale_norm_": float(info["scale_norm"]),
        "user_factors_": np.ascontiguousarray(model.user_factors()),
        "item_factors_": np.ascontiguousarray(item_factors),
        "value_kind_": str(info["value_kind"]),
        "item_gram_": item_factors.T.astype(np.float64) @ item_factors.astype(np.float64),
        "fit_info_": _fit_info(model, n_users, n_items, len(rows), __version__),
    }
    for key, value in state.items():
        setattr(als, key, value)
    return als.save(folder)


def _fit_info(model: SparkALS, n_users: int, n_items: int, n: int, version: str) -> dict[str, Any]:
    """The model card's record (:func:`tastebud.models._card.fit_record`'s keys), with the
    Spark run's settings added."""
    info = model.info
    data = {
        "name": str(info.get("source", "spark")),
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "density": n / max(n_users * n_items, 1),
        "kind": "implicit feedback",
    }
    return {
        "fitted_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "fit_seconds": float(info.get("fit_seconds", 0.0)),
        "tastebud_version": version,
        "data": data,
        "trained_with": (
            f"Spark MLlib ALS (regParam={info['reg_param']:.6g}, "
            f"alpha={model.params.alpha:g}, rank={model.mllib.rank}, "
            f"maxIter={model.params.n_iterations}, seed={model.params.seed})"
        ),
    }
