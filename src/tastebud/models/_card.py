"""Model cards: what a fitted model was trained on, when, with which parameters, and how it
scored on the validation data it carved for itself.

``fit`` records :func:`fit_record` in ``fit_info_`` (saved with the model); ``save`` writes
:func:`model_card` as ``MODEL_CARD.md`` beside ``config.json``, so a model folder says what
it is without loading it (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019,
cut down to what a recommender's training run can state honestly: no claims about use or
fairness that the run did not measure).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from tastebud.data.dataset import Dataset
    from tastebud.models.base import Recommender

CARD_FILE = "MODEL_CARD.md"


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fit_record(dataset: Dataset, seconds: float) -> dict[str, Any]:
    """The training run in plain JSON values: data summary, date, duration, version."""
    from tastebud import __version__

    n_users, n_items, n = dataset.n_users, dataset.n_items, dataset.n_interactions
    data: dict[str, Any] = {
        "name": dataset.name,
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "density": n / max(n_users * n_items, 1),
        "kind": "explicit ratings" if dataset.has_ratings else "implicit feedback",
    }
    if dataset.rating is not None and n:
        data["rating_range"] = [float(dataset.rating.min()), float(dataset.rating.max())]
    if dataset.timestamp is not None and n:
        stamps = dataset.timestamp[np.isfinite(dataset.timestamp)]
        if len(stamps):
            data["time_span"] = f"{_utc(float(stamps.min()))} to {_utc(float(stamps.max()))}"
    if dataset.user_features is not None:
        data["user_attributes"] = [str(c) for c in dataset.user_features.columns]
    if dataset.item_features is not None:
        data["item_attributes"] = [str(c) for c in dataset.item_features.columns]
    return {
        "fitted_at": _utc(dt.datetime.now(dt.UTC).timestamp()),
        "fit_seconds": round(seconds, 3),
        "tastebud_version": __version__,
        "data": data,
    }


def validation_metrics(model: Recommender) -> dict[str, Any]:
    """What the model measured on the validation part it carved from its own training data.

    Read from the state conventions the models share: ``validation_ndcg_`` (one value, or
    one per epoch for models trained with early stopping, with ``best_epoch_``) and
    ``reg_search_`` (ALS ``reg="auto"``: each penalty tried and its NDCG@10).
    """
    out: dict[str, Any] = {}
    scores = getattr(model, "validation_ndcg_", None)
    if scores is not None:
        values = np.atleast_1d(np.asarray(scores, dtype=np.float64))
        if values.size > 1:
            best = int(getattr(model, "best_epoch_", -1))
            if not 0 <= best < values.size:
                best = int(np.nanargmax(values))
            out["validation NDCG@10 (best epoch)"] = float(values[best])
            out["best epoch"] = best + 1
            out["epochs trained"] = int(values.size)
        elif values.size == 1:
            out["validation NDCG@10"] = float(values[0])
    search = getattr(model, "reg_search_", None)
    if search is not None and len(search):
        table = np.asarray(search, dtype=np.float64)
        chosen = float(getattr(model, "reg_", table[np.argmax(table[:, 1]), 0]))
        row = int(np.argmin(np.abs(table[:, 0] - chosen)))
        out["validation NDCG@10 at the chosen reg"] = float(table[row, 1])
        out["chosen reg"] = chosen
        out["reg values tried"] = len(table)
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|")


def summary(cls: type) -> str:
    """What a model class is, for its card: the first paragraph of its docstring on one line,
    as markdown (``:class:`~a.b.ItemKNN``` and ````k```` read `ItemKNN`, `k`)."""
    first = (cls.__doc__ or "").strip().split("\n\n")[0]
    first = re.sub(r":\w+:`~?(?:\w+\.)*(\w+)`", r"`\1`", first).replace("``", "`")
    return " ".join(first.split())


def model_card(model: Recommender) -> str:
    """The model card of a fitted model, as markdown."""
    info: dict[str, Any] = getattr(model, "fit_info_", None) or {}
    doc = summary(type(model))
    lines = [f"# Model card: {model.name}", ""]
    if doc:
        lines += [doc, ""]
    lines += [
        f"- class: `{type(model).__module__}.{type(model).__qualname__}`",
        f"- fitted: {info.get('fitted_at', 'unknown')}"
        + (f" in {info['fit_seconds']:g} s" if "fit_seconds" in info else ""),
        f"- tastebud version: {info.get('tastebud_version', 'unknown')}",
        "",
        "## Training data",
        "",
    ]
    data = info.get("data", {})
    lines += [f"- {key.replace('_', ' ')}: {_cell(value)}" for key, value in data.items()] or [
        "- not recorded"
    ]
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in model.get_params().items()]
    lines += ["", "## Validation", ""]
    metrics = validation_metrics(model)
    if metrics:
        lines += [f"- {key}: {_cell(value)}" for key, value in metrics.items()]
        lines += [
            "",
            "Measured on a validation part carved from the training data, not on any test set.",
        ]
    else:
        lines.append(
            "This model chooses nothing on validation data; evaluate it with "
            "`tastebud evaluate` on a split of your data."
        )
    return "\n".join(lines) + "\n"
