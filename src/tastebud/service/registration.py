"""Model folders trained outside the service -- by Spark (:mod:`tastebud.spark`), in a
notebook (``model.save(path)``) -- registered as versions the service serves like the ones
it trains (``tastebud models register FOLDER``).

:func:`register_folder` goes check -> copy -> load the copy -> record -> activate:

1. the folder must hold a saved tastebud model whose class is installed (a clear one-line
   error otherwise); loading never unpickles (``np.load(allow_pickle=False)``, the class
   looked up by registered name only);
2. it is copied into ``model_dir`` under a hidden name and *the copy* is loaded and checked,
   so what is served is what was checked, and the service owns it: deleting or changing the
   source afterwards changes nothing;
3. the model must serve: recommend from a live history (fold-in -- the service scores each
   user from their stored events, never from a model's user factors) and speak the
   database's item ids (below);
4. under the lock a retrain holds on ``model_dir`` (so a retrain under way finishes first
   and cannot activate its version over this one), the copy takes its final name, the
   version row is written, and it is activated when asked. Serving processes pick an
   activation up within a second (:meth:`Versions.follow_active
   <tastebud.service.versions.Versions.follow_active>`), as they do a rollback.

Decisions, and why:

- **Ids.** A model none of whose items the database stores is refused: it was trained on
  other ids (indices instead of ids, another catalogue) and could only serve popular items.
  Items it has that the catalogue lacks are a warning: they are never recommended (the
  pipeline drops items the catalogue does not hold). Its users are only counted, since
  serving folds users in from their stored events; users it has that the database does not
  store are a warning, because one of them may be a user deleted before the registration.
- **Offline metrics** are not measured: a retrained version's holdout metrics refit the
  configured model on 80% of the events, which cannot be done for a model trained
  elsewhere, and scoring it on events it may have trained on would flatter it. The
  version's ``metrics`` say ``external`` instead, with what the model holds.
- **Deleted users.** The row has no ``last_seq``, so deleting any user with events marks it
  (``forgotten_at``; the deletion counts an unknown ``last_seq`` as later) and the usual
  retrain follows, after which the copy -- inside ``model_dir`` -- is deleted. The forget
  mark current at registration is recorded; a deletion that commits while the folder is
  registered retires the new version and fails the registration. Whether the model learned
  from a user deleted *before* the registration the service cannot know: the training data
  must leave such users out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tastebud.errors import InvalidInputError, ModelFileError, TastebudError, UnknownIdError
from tastebud.models import Recommender, load
from tastebud.service.settings import Settings
from tastebud.service.storage import ModelVersionRow, Storage
from tastebud.service.versions import (
    ForgottenVersionError,
    Versions,
    new_model_path,
    retrain_lock,
)

#: What ``--name`` may be: it names the version's folder in ``model_dir``.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: How many unknown ids an error or warning quotes.
_QUOTED = 3


@dataclasses.dataclass(frozen=True)
class Registered:
    """A registered version and the warnings the operator should read (one line each)."""

    version: ModelVersionRow
    warnings: tuple[str, ...]


def register_folder(
    settings: Settings,
    storage: Storage,
    folder: str | Path,
    *,
    name: str | None = None,
    activate: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> Registered:
    """Copy a model folder trained elsewhere into ``settings.model_dir``, record it as a
    version and activate it if asked (see the module's docstring for every check).

    ``name`` labels the version (its folder and ``metrics["name"]``); ``on_wait`` is
    called once when a retrain under way holds ``model_dir`` and the registration waits
    for it. Raises :class:`ModelFileError` for a folder that is not a serveable model and
    :class:`InvalidInputError` for one the database's ids do not fit; nothing is recorded
    then, and no copy stays behind."""
    label = _check_name(name)
    source = Path(folder)
    model_name = _check_folder(source)
    model_dir = Path(settings.model_dir).resolve()
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"model_dir {model_dir}: cannot create it: {err}") from None
    mark = storage.forget_mark()  # before anything else: a deletion after it is seen below
    incoming = Path(tempfile.mkdtemp(prefix=".registering-", dir=model_dir))
    try:
        copy = incoming / "model"
        _copy(source, copy, model_dir)
        model = _load_copy(copy, source)
        warnings, held = _check_ids(storage, model, source)
        with _model_dir_lock(model_dir, on_wait):
            return _record(
                storage, model, model_name, copy, source, model_dir, label, held, mark,
                warnings, activate,
            )  # fmt: skip
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def activate_version(storage: Storage, version_id: int) -> ModelVersionRow:
    """Make a recorded version the active one from outside a serving process (its files are
    loaded first; a version that learned from a deleted user is refused); the serving
    processes follow within a second."""
    row = storage.get_model_version(version_id)
    if row is None:
        raise UnknownIdError(f"unknown model version {version_id}")
    if row.get("forgotten_at") is not None:
        raise ForgottenVersionError(row)
    Versions.load(row)  # ModelFileError for a version whose files cannot serve
    return storage.activate_model_version(version_id)


# -- the steps -------------------------------------------------------------------------------
def _check_name(name: str | None) -> str | None:
    if name is not None and _NAME.fullmatch(name) is None:
        raise InvalidInputError(
            f"--name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it names the version's folder)"
        )
    return name


def _check_folder(source: Path) -> str:
    """The registered model name a folder's ``config.json`` gives, once the folder is one
    (cheap checks, before anything is copied); refuses a class whose extra is missing."""
    from tastebud.models import get_class

    if not source.exists():
        raise ModelFileError(f"{source}: no such folder")
    if not source.is_dir():
        raise ModelFileError(f"{source} is a file, not a model folder")
    config_path = source / "config.json"
    if not config_path.is_file():
        raise ModelFileError(f"{source} is not a saved tastebud model (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{config_path} is not valid JSON: {err}") from None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, str):
        raise ModelFileError(f"{config_path} is not a tastebud model file")
    try:
        cls = get_class(model)
    except InvalidInputError:
        raise ModelFileError(
            f"{source} holds a model named {model!r}, which this tastebud does not know"
        ) from None
    missing = cls.missing_extra()
    if missing is not None:
        raise ModelFileError(
            f"{source} holds a {model!r} model whose packages are not installed; add them "
            f"with {missing}"
        )
    return model


def _copy(source: Path, copy: Path, model_dir: Path) -> None:
    """Copy the folder (links followed: the copy must not depend on the source), refusing
    at once when ``model_dir``'s disk has not room for it."""
    size = 0
    for root, _dirs, files in os.walk(source, followlinks=True):
        for file in files:
            with contextlib.suppress(OSError):  # copytree names a file it cannot read
                size += (Path(root) / file).stat().st_size
    free = shutil.disk_usage(model_dir).free
    if size > free:
        raise InvalidInputError(
            f"{source} holds {size / 2**20:,.0f} MiB but model_dir {model_dir} has "
            f"{free / 2**20:,.0f} MiB free"
        )
    try:
        shutil.copytree(source, copy, symlinks=False)
    except shutil.Error as err:  # one entry per file that failed: (src, dst, why)
        first = err.args[0][0] if err.args and err.args[0] else ("?", "?", str(err))
        raise ModelFileError(f"{source}: cannot copy {first[0]}: {first[2]}") from None
    except OSError as err:
        raise ModelFileError(
            f"{source}: cannot copy into model_dir {model_dir}: {err.strerror or err}"
        ) from None


def _load_copy(copy: Path, source: Path) -> Recommender:
    """The model of the copy; its errors name the source folder the operator gave."""
    try:
        model = load(copy)
    except TastebudError as err:
        raise ModelFileError(str(err).replace(str(copy), str(source))) from None
    except Exception as err:  # noqa: BLE001 -- damaged files can fail anywhere; one error
        raise ModelFileError(f"{source}: cannot load it: {type(err).__name__}: {err}") from None
    if not model.supports_fold_in:
        raise ModelFileError(
            f"{source} holds a {model.name!r} model, which cannot recommend from a live "
            "history, so the service cannot serve it"
        )
    return model


def _check_ids(
    storage: Storage, model: Recommender, source: Path
) -> tuple[list[str], dict[str, int]]:
    """Refuse a model none of whose items the database stores; warn about items and users it
    has that the database does not store. Returns the warnings and the counts."""
    items = _text_ids(model.items_)
    users = _text_ids(model.users_)
    stored_items = storage.versions.count_stored("item", items)
    stored_users = storage.versions.count_stored("user", users)
    if stored_items == 0:
        catalogue = storage.count_items()
        why = (
            "the database stores no items yet: import the catalogue first (tastebud import)"
            if catalogue == 0
            else f"it was trained on other ids than the {catalogue:,} stored items"
        )
        raise InvalidInputError(
            f"{source}: none of the model's {len(items):,} items (such as "
            f"{_quote(items)}) is in the database: {why}"
        )
    warnings = []
    if stored_items < len(items):
        warnings.append(
            f"{len(items) - stored_items:,} of the model's {len(items):,} items are not in the "
            "database: they are never recommended"
        )
    if stored_users < len(users):
        warnings.append(
            f"{len(users) - stored_users:,} of the model's {len(users):,} users are not in the "
            "database (never imported, or deleted): the service serves users from their "
            "stored events, but the model folder holds their ids; if any was deleted, "
            "retrain without them"
        )
    held = {
        "users": len(users),
        "items": len(items),
        "interactions": int(getattr(model.seen_, "nnz", 0)),
        "stored_users": stored_users,
        "stored_items": stored_items,
    }
    return warnings, held


@contextlib.contextmanager
def _model_dir_lock(model_dir: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    """Hold the retrain lock of ``model_dir``, calling ``on_wait`` first when a retrain
    holds it (the registration then waits for it)."""
    with retrain_lock(model_dir, wait=False) as locked:
        if locked:
            yield
            return
    if on_wait is not None:
        on_wait()
    with retrain_lock(model_dir, wait=True):
        yield


def _record(
    storage: Storage,
    model: Recommender,
    model_name: str,
    copy: Path,
    source: Path,
    model_dir: Path,
    label: str | None,
    held: dict[str, int],
    mark: int,
    warnings: list[str],
    activate: bool,
) -> Registered:
    """Under the retrain lock: the copy takes its final name, the row is written (no
    ``last_seq``: see the module's docstring), and activated when asked."""
    path = new_model_path(model_dir, label or f"{model_name}-external")
    copy.rename(path)
    metrics: dict[str, Any] = {
        "external": f"trained outside the service, registered from {source.resolve()}",
        "offline": "not measured (a model trained elsewhere cannot be refit on a holdout)",
        **held,
        "forget_mark": mark,
        "registered_seq": storage.last_seq(),
    }
    if label is not None:
        metrics["name"] = label
    try:
        version = storage.add_model_version(
            model=model_name,
            params=model.get_params(),
            path=str(path),
            metrics=metrics,
            n_events=storage.count_events(),
        )
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    if storage.forget_mark() > mark:  # a user deleted since the mark was read
        storage.mark_forgotten([int(version["id"])])
        shutil.rmtree(path, ignore_errors=True)
        raise TastebudError(
            f"a user with events was deleted while {source} was registered, so the model may "
            f"hold them: version {version['id']} is retired; register the folder again"
        )
    if activate:
        version = storage.activate_model_version(int(version["id"]))
    return Registered(version, tuple(warnings))


def _text_ids(ids: Any) -> list[str]:
    """An id map's ids as the service's text ids (``7`` -> ``"7"``)."""
    return [str(i) for i in ids.to_ids(np.arange(len(ids))).tolist()]


def _quote(ids: list[str]) -> str:
    return ", ".join(repr(i) for i in ids[:_QUOTED]) + (", ..." if len(ids) > _QUOTED else "")
