"""tastebud on Apache Spark: the optional extra ``tastebud[spark]`` (PySpark 4, Java 17+).

For data that outgrow one machine, on the engine teams already run::

    from tastebud import spark as tbs

    session = tbs.spark_session("local[4]")            # or yarn, k8s://..., spark://...
    data = tbs.read_interactions(session, "s3a://bucket/events/")   # Parquet or CSV
    train, test = tbs.random_split(data, 0.2, seed=0)
    model = tbs.fit_als(train, n_factors=64, reg=30.0, alpha=2.5)   # MLlib ALS
    summary, per_user = tbs.evaluate(model, test, k=10)             # in Spark
    model.recommend(10).write.parquet("s3a://bucket/recs/")         # every user's top 10
    model.export("models/als-spark")     # a tastebud model folder: models.load, serve

Modules: :mod:`~tastebud.spark.io` (reading and checking, splits, id indexing),
:mod:`~tastebud.spark.als` (MLlib ALS with tastebud's confidence scheme, batch top-k),
:mod:`~tastebud.spark.metrics` (the library's ranking metrics in Spark),
:mod:`~tastebud.spark.evaluation` (the library's protocol), :mod:`~tastebud.spark.export`
(the model folder) and :mod:`~tastebud.spark.cli` (``tastebud spark ...``).

Importing this package does not import PySpark; the names below load their module on
first use, and a missing PySpark is a one-line error naming the extra.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "spark_session": "tastebud.spark._session",
    "read_interactions": "tastebud.spark.io",
    "from_frame": "tastebud.spark.io",
    "random_split": "tastebud.spark.io",
    "Interactions": "tastebud.spark.io",
    "fit_als": "tastebud.spark.als",
    "SparkALS": "tastebud.spark.als",
    "ranking_metrics": "tastebud.spark.metrics",
    "evaluate": "tastebud.spark.evaluation",
    "export_als": "tastebud.spark.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tastebud.spark' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
