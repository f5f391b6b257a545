"""Bulk import of a :class:`Dataset`: users, items with titles and attributes, interactions as
events, in one transaction, idempotent (importing the same data again adds nothing).

A feature table's cells become JSON attributes the API can answer with: numpy values made
plain, and what no attribute may hold (a missing value, an integer beyond 64 bits, text with a
NUL or a lone surrogate, nesting too deep) left out instead of failing the import.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Connection

from tastebud import rules
from tastebud.data.dataset import Dataset
from tastebud.errors import InvalidInputError
from tastebud.service.storage.checks import check_id
from tastebud.service.storage.db import BULK_CHUNK, Database
from tastebud.service.storage.rows import ImportCounts
from tastebud.service.storage.schema import EVENTS, ITEMS, USERS

#: What :func:`feature_value` answers for a cell that an import leaves out.
MISSING = object()


def import_dataset(
    db: Database, dataset: Dataset, *, event_type: str = "rating", value: str = "auto"
) -> ImportCounts:
    """Load a :class:`Dataset` (users, items with titles/attributes, interactions).

    Ids are stored as ``str(id)``; feature-table rows become attributes (numpy values
    made plain, missing values left out) and an item ``title`` column becomes the title.
    Users and items already stored are left as they are. Each interaction becomes an
    event of ``event_type`` whose value is the rating (``value="rating"``), the weight
    (``"weight"``), none (``"none"``) or, for ``"auto"``, the rating, else the weight,
    else none; its ``ts`` is the timestamp, else now. Its ``client_event_id`` is
    ``import:["<dataset name>","<user>","<item>"]`` (a dataset holds one interaction per
    pair), so importing the same data again adds nothing.

    Everything is written in one transaction. Returns counts of rows written: ``users``,
    ``items``, ``events``, and ``duplicates`` (events already stored, skipped).
    """
    if not isinstance(dataset, Dataset):
        raise InvalidInputError(f"import_dataset needs a Dataset, got {type(dataset).__name__}")
    kind = check_id(event_type, "event_type")
    values = _dataset_values(dataset, value)
    now = time.time()
    for what, column, problem in (
        ("value", values, rules.value_problem),
        ("timestamp", dataset.timestamp, rules.ts_problem),
    ):
        _check_column(dataset.name, what, column, problem)

    user_ids = [str(u) for u in dataset.users.ids.tolist()]
    item_ids = [str(i) for i in dataset.items.ids.tolist()]
    for what, ids in (("user", user_ids), ("item", item_ids)):
        for key in ids:
            check_id(key, f"{what} id")
    user_attrs, _ = _feature_records(dataset.user_features, len(user_ids), take_title=False)
    item_attrs, titles = _feature_records(dataset.item_features, len(item_ids), take_title=True)
    user_rows = [
        {"id": uid, "attributes": attrs, "created_at": now}
        for uid, attrs in zip(user_ids, user_attrs, strict=True)
    ]
    item_rows = [
        {
            "id": iid,
            "title": title,
            "attributes": attrs,
            "available": True,
            "created_at": now,
            "updated_at": now,
        }
        for iid, title, attrs in zip(item_ids, titles, item_attrs, strict=True)
    ]
    event_rows = _event_rows(dataset, user_ids, item_ids, kind, values, now)
    n = dataset.n_interactions

    def run(conn: Connection) -> ImportCounts:
        counts: ImportCounts = {"users": 0, "items": 0, "events": 0, "duplicates": 0}
        counts["users"] = db.bulk_insert(conn, USERS, user_rows, skip_conflicts_on="id")
        counts["items"] = db.bulk_insert(conn, ITEMS, item_rows, skip_conflicts_on="id")
        for start in range(0, n, BULK_CHUNK):
            counts["events"] += db.bulk_insert(
                conn,
                EVENTS,
                event_rows(start, min(start + BULK_CHUNK, n)),
                skip_conflicts_on="client_event_id",
            )
        counts["duplicates"] = n - counts["events"]
        return counts

    return db.write(run)


def _event_rows(
    dataset: Dataset,
    user_ids: list[str],
    item_ids: list[str],
    kind: str,
    values: np.ndarray | None,
    now: float,
) -> Callable[[int, int], list[dict[str, Any]]]:
    """The ``events`` rows of the interactions ``start:stop``, one chunk at a time."""

    def encode(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    name_json = encode(dataset.name)
    user_json = np.array([encode(u) for u in user_ids], dtype=object)
    item_json = np.array([encode(i) for i in item_ids], dtype=object)
    user_text = np.array(user_ids, dtype=object)
    item_text = np.array(item_ids, dtype=object)
    timestamps = dataset.timestamp

    def rows(start: int, stop: int) -> list[dict[str, Any]]:
        ui = dataset.user_index[start:stop]
        ii = dataset.item_index[start:stop]
        ts = (
            [now] * (stop - start)
            if timestamps is None
            else timestamps[start:stop].astype(np.float64).tolist()
        )
        vals = [None] * (stop - start) if values is None else values[start:stop].tolist()
        return [
            {
                "user_id": u,
                "item_id": i,
                "type": kind,
                "value": v,
                "ts": t,
                "client_event_id": _import_event_id(name_json, uj, ij),
                "received_at": now,
            }
            for u, i, uj, ij, v, t in zip(
                user_text[ui].tolist(),
                item_text[ii].tolist(),
                user_json[ui].tolist(),
                item_json[ii].tolist(),
                vals,
                ts,
                strict=True,
            )
        ]

    return rows


def feature_value(value: Any) -> Any:
    """A feature cell as a JSON value that :func:`rules.json_problem` accepts, or
    :data:`MISSING` for NaN/NA/NaT/None and for what no attribute may hold (an integer beyond
    64 bits, text with a NUL or a lone surrogate, nesting deeper than
    :data:`rules.MAX_JSON_DEPTH`): an import leaves such a cell out instead of failing. In a
    list or an object, such entries are left out."""
    try:
        cell = _json_cell(value)
    except RecursionError:
        return MISSING
    if cell is MISSING or rules.json_problem({"attribute": cell}) is not None:  # too deep
        return MISSING
    return cell


def _json_cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, np.datetime64):
        return MISSING if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool | int | float | str):
        return value if rules.json_problem(value) is None else MISSING
    if isinstance(value, list | tuple | np.ndarray):
        return [v for v in (_json_cell(x) for x in value) if v is not MISSING]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            cell = _json_cell(item)
            if cell is not MISSING and isinstance(key, str) and rules.text_problem(key) is None:
                out[key] = cell
        return out
    text = str(value)
    return text if rules.text_problem(text) is None else MISSING


def _feature_records(
    table: pd.DataFrame | None, n: int, *, take_title: bool
) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Attributes (and titles) per row of a feature table aligned with an id map."""
    if table is None:
        return [{} for _ in range(n)], [None] * n
    if len(table) != n:
        raise InvalidInputError("feature table is not aligned with the dataset's ids")
    records = table.to_dict("records")
    attributes: list[dict[str, Any]] = []
    titles: list[str | None] = []
    for record in records:
        attrs: dict[str, Any] = {}
        title: str | None = None
        for key, cell in record.items():
            value = feature_value(cell)
            if value is MISSING or rules.text_problem(str(key)) is not None:
                continue
            if take_title and key == "title":
                title = value if isinstance(value, str) else str(value)
            else:
                attrs[str(key)] = value
        attributes.append(attrs)
        titles.append(title)
    return attributes, titles


def _import_event_id(name_json: str, user_json: str, item_json: str) -> str:
    """Deterministic ``client_event_id`` of an imported interaction (one per user/item pair)."""
    key = f"import:[{name_json},{user_json},{item_json}]"
    if len(key) > rules.MAX_ID_LENGTH:
        key = "import:sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def _check_column(
    name: str, what: str, column: np.ndarray | None, problem: Callable[[float], str | None]
) -> None:
    """Refuse an import whose interactions hold a value the rules refuse (asked once per
    distinct value), naming the first."""
    if column is None or not len(column):
        return
    distinct = np.unique(np.asarray(column, dtype=np.float64))  # NaN sorts last
    for number in distinct.tolist():
        found = problem(number)
        if found is not None:
            raise InvalidInputError(
                f"{name}: an interaction's {what} {number:g} {found}; nothing was imported"
            )


def _dataset_values(dataset: Dataset, value: str) -> np.ndarray | None:
    """Event values of an import as float64 (shortest decimal of the float32), or None."""
    if value not in ("auto", "rating", "weight", "none"):
        raise InvalidInputError(
            f"value must be 'auto', 'rating', 'weight' or 'none', got {value!r}"
        )
    if value == "rating" and dataset.rating is None:
        raise InvalidInputError(f"{dataset.name} has no ratings")
    if value == "weight" and dataset.weight is None:
        raise InvalidInputError(f"{dataset.name} has no weights")
    chosen: np.ndarray | None = None
    if value in ("auto", "rating"):
        chosen = dataset.rating
    if chosen is None and value in ("auto", "weight"):
        chosen = dataset.weight
    if chosen is None:
        return None
    # float32 -> its shortest decimal text -> float64, so 0.1 is stored as 0.1.
    return np.asarray(chosen, dtype=np.float32).astype(str).astype(np.float64)
