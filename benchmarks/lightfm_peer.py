"""tastebud's ``feature-mf`` beside LightFM (Kula 2015), the library it takes its idea from.

LightFM is not a tastebud dependency: the script installs it into a throwaway virtual
environment (``--lightfm-venv``, default ``/tmp/lfmvenv``) and runs it there in a subprocess
that receives the training matrices and returns a score matrix, so both models are ranked by
the same code here (full ranking, training items masked, top 10, tastebud's metrics). A plain
``pip install lightfm`` of LightFM 1.17 fails on current setuptools (its ``setup.py`` sets an
attribute on ``__builtins__``, a dict inside pip's isolated build); the script then retries
with ``--no-build-isolation`` after installing its build requirements, and records every
attempt's outcome in the results. When LightFM cannot be had, ours run alone.

Tasks (ML-100K, ratings >= 4 are positives):

1. Warm users: ``random_split(ml.to_implicit(4.0), 0.2, seed=0)``; NDCG@10, Recall@10 over
   the full catalog, fit seconds. tastebud popularity, ALS and EASE for reference.
2. Cold items: ``cold_item_split(ml, 0.2, seed=0)`` (every rating in train; the held-out
   items have none); each model ranks only the held-out items for every test user with a
   held-out rating >= 4; Recall@10 and NDCG@10 against a random order of them (mean of 10
   seeds). Item features: genres (one-hot) and the release year -- in ten quantile bins for
   ours by default, one-hot decades for LightFM (its features are meant to be indicators),
   and ours with decades too for a like-for-like row.

LightFM settings: 64 components, 30 epochs, learning rate 0.05, max_sampled 10, one thread;
features are its usual ones (identity + indicators, each row scaled to sum 1, as its
``Dataset`` builds them). Fit time is one plain fit after a warm-up (numba compilation of
ours is not counted).

Run: .venv/bin/python benchmarks/lightfm_peer.py [--lightfm-venv /tmp/lfmvenv] [--no-install]
Writes benchmarks/results/lightfm_peer.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_results
from tastebud.data import load_movielens_100k
from tastebud.data.dataset import Dataset
from tastebud.evaluation import prepare_test
from tastebud.metrics.ranking import ndcg_at_k, recall_at_k
from tastebud.models import Recommender, available, create
from tastebud.models.base import mask_rows, top_k
from tastebud.split import Split, cold_item_split, random_split

RESULTS = Path(__file__).parent / "results"
K = 10
LIGHTFM = {
    "no_components": 64,
    "learning_rate": 0.05,
    "max_sampled": 10,
    "epochs": 30,
    "random_state": 0,
}

# Runs inside the LightFM environment: fit on the given matrices, score users x items.
RUNNER = r"""
import json, sys, time
import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

folder = sys.argv[1]
spec = json.load(open(folder + "/spec.json"))
def csr(name):
    z = np.load(folder + "/" + name + ".npz")
    return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
train = csr("train").tocoo()
uf = csr("user_features") if spec["user_features"] else None
itf = csr("item_features") if spec["item_features"] else None
model = LightFM(loss=spec["loss"], no_components=spec["no_components"],
                learning_rate=spec["learning_rate"], max_sampled=spec["max_sampled"],
                random_state=spec["random_state"])
start = time.perf_counter()
model.fit(train, user_features=uf, item_features=itf, epochs=spec["epochs"], num_threads=1)
seconds = time.perf_counter() - start
users = np.load(folder + "/users.npy")
items = np.load(folder + "/items.npy")
uu = np.repeat(users, len(items)).astype(np.int32)
ii = np.tile(items, len(users)).astype(np.int32)
scores = model.predict(uu, ii, user_features=uf, item_features=itf, num_threads=1)
np.save(folder + "/scores.npy", scores.reshape(len(users), len(items)).astype(np.float64))
json.dump({"fit_seconds": seconds}, open(folder + "/out.json", "w"))
"""


# -- LightFM in its own environment ------------------------------------------------------------
def _tail(text: str, lines: int = 6) -> str:
    """The error lines of a command's output (the last lines when none says Error)."""
    all_lines = text.strip().splitlines()
    errors = [line.strip() for line in all_lines if "Error" in line][:3]
    return "\n".join(errors or all_lines[-lines:])


def ensure_lightfm(venv: Path, install: bool) -> tuple[Path | None, list[dict[str, Any]]]:
    """The LightFM environment's python, installing it when asked; and what was tried."""
    python = venv / "bin" / "python"
    attempts: list[dict[str, Any]] = []

    def importable() -> str | None:
        if not python.exists():
            return None
        probe = subprocess.run(
            [str(python), "-c", "import lightfm; print(lightfm.__version__)"],
            capture_output=True,
            text=True,
        )
        return probe.stdout.strip() if probe.returncode == 0 else None

    log = venv / "tastebud-install-attempts.json"  # how the environment was made, kept with it
    version = importable()
    if version or not install:
        if log.exists():
            attempts = json.loads(log.read_text())
        attempts.append({"step": "found" if version else "not installed", "lightfm": version})
        return (python if version else None), attempts
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--no-cache-dir", "lightfm"],
    ]
    retry = [
        [str(python), "-m", "pip", "install", "setuptools", "wheel", "numpy", "scipy"],
        [str(python), "-m", "pip", "install", "--no-cache-dir", "--no-build-isolation", "lightfm"],
    ]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True)
        attempts.append(
            {"step": " ".join(command[1:]), "rc": done.returncode, "tail": _tail(done.stderr)}
        )
        if done.returncode != 0:
            break
    if importable() is None and python.exists():
        for command in retry:
            done = subprocess.run(command, capture_output=True, text=True)
            attempts.append(
                {"step": " ".join(command[1:]), "rc": done.returncode, "tail": _tail(done.stderr)}
            )
            if done.returncode != 0:
                break
    version = importable()
    attempts.append({"step": "import lightfm", "lightfm": version})
    if python.exists():
        log.write_text(json.dumps(attempts, indent=2))
    return (python if version else None), attempts


def _save_csr(path: Path, matrix: sp.csr_matrix) -> None:
    m = sp.csr_matrix(matrix, dtype=np.float32)
    np.savez(path, data=m.data, indices=m.indices, indptr=m.indptr, shape=np.array(m.shape))


def lightfm_scores(
    python: Path,
    positives: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    *,
    loss: str = "warp",
    user_features: sp.csr_matrix | None = None,
    item_features: sp.csr_matrix | None = None,
) -> tuple[np.ndarray, float]:
    """Fit LightFM in its environment on ``positives``; scores of users x items, fit seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _save_csr(folder / "train.npz", positives)
        spec = dict(LIGHTFM, loss=loss)
        spec["user_features"] = user_features is not None
        spec["item_features"] = item_features is not None
        if user_features is not None:
            _save_csr(folder / "user_features.npz", user_features)
        if item_features is not None:
            _save_csr(folder / "item_features.npz", item_features)
        (folder / "spec.json").write_text(json.dumps(spec))
        np.save(folder / "users.npy", users.astype(np.int32))
        np.save(folder / "items.npy", items.astype(np.int32))
        (folder / "runner.py").write_text(RUNNER)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        done = subprocess.run(
            [str(python), str(folder / "runner.py"), str(folder)],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"LightFM run failed:\n{_tail(done.stderr, 20)}")
        seconds = json.loads((folder / "out.json").read_text())["fit_seconds"]
        return np.load(folder / "scores.npy"), float(seconds)


def indicator_rows(*blocks: sp.csr_matrix) -> sp.csr_matrix:
    """LightFM's usual feature rows: the blocks side by side, each row scaled to sum 1."""
    matrix = sp.hstack(blocks, format="csr").astype(np.float64)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.where(sums > 0, sums, 1.0)) @ matrix)


def one_hot(values: pd.Series) -> sp.csr_matrix:
    """One column per distinct value (``|``-joined values: several), missing values: none."""
    tokens = values.astype("string").fillna("").str.split("|").explode()
    tokens = tokens[tokens.str.len() > 0]
    names = pd.Index(tokens.unique())
    rows = pd.Index(values.index).get_indexer(tokens.index)
    return sp.csr_matrix(
        (np.ones(len(tokens)), (rows, names.get_indexer(tokens.to_numpy()))),
        shape=(len(values), len(names)),
    )


# -- evaluation ---------------------------------------------------------------------------------
def relevance(train: Dataset, test: pd.DataFrame) -> tuple[np.ndarray, sp.csr_matrix]:
    """Users with a test rating >= 4 (or any test interaction without ratings) and their
    relevant items, as internal indices of ``train`` (``prepare_test``)."""
    threshold = 4.0 if "rating" in test.columns else None
    prepared = prepare_test(Split(train, test), threshold)
    return prepared.users, prepared.relevant


def metrics(scores: np.ndarray, relevant: sp.csr_matrix) -> dict[str, float]:
    top, _ = top_k(scores, K)
    return {
        f"NDCG@{K}": float(np.nanmean(ndcg_at_k(top, relevant, K))),
        f"Recall@{K}": float(np.nanmean(recall_at_k(top, relevant, K))),
    }


def fit_timed(model: Recommender, train: Dataset) -> float:
    start = time.perf_counter()
    model.fit(train)
    return time.perf_counter() - start


def warm_task(python: Path | None) -> pd.DataFrame:
    ml = load_movielens_100k()
    split = random_split(ml.to_implicit(4.0), 0.2, seed=0)
    train = split.train
    users, relevant = relevance(train, split.test)
    seen = train.matrix("binary")
    rows = []

    def record(label: str, scores: np.ndarray, seconds: float) -> None:
        mask_rows(scores, seen, users, None)
        rows.append({"model": label, **metrics(scores, relevant), "fit_seconds": seconds})
        print(f"  warm {label}: {rows[-1]}", file=sys.stderr)

    ours: dict[str, Recommender] = {
        "tastebud feature-mf (defaults: identity + all user/item features)": create("feature-mf"),
        "tastebud feature-mf, identity only": create(
            "feature-mf", user_columns=(), item_columns=()
        ),
        "tastebud feature-mf, identity + genres/year": create("feature-mf", user_columns=()),
        "tastebud feature-mf, numbers z-scored (numeric_bins=0)": create(
            "feature-mf", numeric_bins=0
        ),
        "tastebud feature-mf, loss bpr": create("feature-mf", loss="bpr"),
        "tastebud feature-mf, identity + history bag (user_history)": create(
            "feature-mf", user_history=True, user_columns=(), item_columns=()
        ),
    }
    ours.update({f"tastebud {n}": create(n) for n in ("popularity", "als", "ease")})
    for label, model in ours.items():
        seconds = fit_timed(model, train)
        record(label, model._score_block(users, None), seconds)
    if python is not None:
        items = np.arange(train.n_items)
        positives = train.matrix("binary")
        genres = one_hot(train.item_features["genres"])
        identity = sp.identity(train.n_items, format="csr")
        for label, loss, features in (
            ("LightFM warp, identity only", "warp", None),
            ("LightFM bpr, identity only", "bpr", None),
            ("LightFM warp, identity + genres", "warp", indicator_rows(identity, genres)),
        ):
            scores, seconds = lightfm_scores(
                python, positives, users, items, loss=loss, item_features=features
            )
            record(label, scores, seconds)
    return pd.DataFrame(rows).set_index("model")


def _cold_rows(split: Split) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    train = split.train
    cold = np.flatnonzero(train.item_popularity() == 0)
    users, relevant = relevance(train, split.test)
    relevant = relevant[:, cold]
    keep = np.diff(relevant.indptr) > 0
    return cold, users[keep], relevant[keep]


def cold_task(python: Path | None) -> pd.DataFrame:
    ml = load_movielens_100k()
    assert ml.item_features is not None
    decade = (ml.item_features["year"] // 10 * 10).astype("Int64").astype("string")
    items = ml.item_features.assign(decade=decade)
    ml = Dataset.from_frame(
        ml.interactions, rating="rating", timestamp="timestamp",
        users=ml.user_features, items=items, name="ml-100k",
    )  # fmt: skip
    split = cold_item_split(ml, 0.2, seed=0)
    train = split.train
    cold, users, relevant = _cold_rows(split)
    rows = []

    def record(label: str, scores: np.ndarray, seconds: float | None) -> None:
        rows.append({"model": label, **metrics(scores, relevant), "fit_seconds": seconds})
        print(f"  cold {label}: {rows[-1]}", file=sys.stderr)

    random = pd.DataFrame(
        [
            metrics(np.random.default_rng(seed).random((len(users), len(cold))), relevant)
            for seed in range(10)
        ]
    ).mean()
    rows.append({"model": "random order of the cold items (10 seeds)", **random.to_dict()})
    ours: dict[str, Recommender] = {
        "tastebud feature-mf (defaults: genres + year in 10 quantile bins)": create(
            "feature-mf", item_columns=("genres", "year")
        ),
        "tastebud feature-mf, genres + z-scored year (numeric_bins=0)": create(
            "feature-mf", item_columns=("genres", "year"), numeric_bins=0
        ),
        "tastebud feature-mf, genres + decades": create(
            "feature-mf", item_columns=("genres", "decade")
        ),
        "tastebud feature-mf, genres only": create("feature-mf", item_columns=("genres",)),
        "tastebud feature-mf, genres + year, loss bpr": create(
            "feature-mf", item_columns=("genres", "year"), loss="bpr"
        ),
    }
    for label, model in ours.items():
        seconds = fit_timed(model, train)
        record(label, model._score_block(users, cold), seconds)
    for name in ("content", "feature-profile"):
        if name in available():  # the content models, when this checkout has them
            try:
                model = create(name)
                seconds = fit_timed(model, train)
                record(f"tastebud {name}", model._score_block(users, cold), seconds)
            except Exception as err:  # noqa: BLE001 - a peer model's failure is reported
                print(f"  cold tastebud {name} failed: {err}", file=sys.stderr)
    if python is not None:
        positives = train.to_implicit(4.0).matrix("binary")
        genres = one_hot(train.item_features["genres"])
        decades = one_hot(train.item_features["decade"])
        identity = sp.identity(train.n_items, format="csr")
        for label, features in (
            ("LightFM warp, identity + genres", indicator_rows(identity, genres)),
            (
                "LightFM warp, identity + genres + decades",
                indicator_rows(identity, genres, decades),
            ),
            ("LightFM warp, genres + decades (no identity)", indicator_rows(genres, decades)),
        ):
            scores, seconds = lightfm_scores(python, positives, users, cold, item_features=features)
            record(label, scores, seconds)
    table = pd.DataFrame(rows).set_index("model")
    base = float(random[f"Recall@{K}"])
    table[f"Recall@{K} / random"] = table[f"Recall@{K}"] / base
    return table


def _markdown_table(table: pd.DataFrame) -> str:
    header = "| model | " + " | ".join(table.columns) + " |"
    lines = [header, "|---|" + "---:|" * len(table.columns)]
    for name, row in table.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.4f}" for v in row.to_numpy(dtype=float)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lightfm-venv", type=Path, default=Path("/tmp/lfmvenv"))
    parser.add_argument("--no-install", action="store_true", help="never pip install LightFM")
    parser.add_argument("--tasks", default="warm,cold")
    args = parser.parse_args()
    tasks = set(args.tasks.split(","))
    python, attempts = ensure_lightfm(args.lightfm_venv, not args.no_install)
    from tastebud.data import synthetic

    create("feature-mf", epochs=2).fit(synthetic(60, 40, 800, seed=0))  # compile the kernels
    sections: dict[str, pd.DataFrame] = {}
    if "warm" in tasks:
        sections["Warm users: ML-100K positives, per-user random 80/20 (seed 0)"] = warm_task(
            python
        )
    if "cold" in tasks:
        sections[
            "Cold items: ML-100K, 20% of the items held out (seed 0), ranking only those items"
        ] = cold_task(python)
    lightfm_version = next((a["lightfm"] for a in attempts if a.get("lightfm")), None)
    meta = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "lightfm": lightfm_version,
        "lightfm_install": attempts,
        "lightfm_settings": LIGHTFM,
    }
    result = {
        "meta": meta,
        "sections": {k: v.reset_index().to_dict(orient="records") for k, v in sections.items()},
    }
    text = ["# feature-mf vs LightFM\n", f"LightFM: {lightfm_version or 'not available'}\n"]
    for attempt in attempts:
        tail = attempt.get("tail")
        rc = attempt.get("rc")
        text.append(f"- {attempt['step']}" + (f" (rc {rc})" if rc is not None else ""))
        if tail and rc:
            text.append("\n  ```\n  " + tail.replace("\n", "\n  ") + "\n  ```")
    text.append(f"\n{ {k: v for k, v in meta.items() if k != 'lightfm_install'} }\n")
    for title, table in sections.items():
        text += [f"## {title}\n", _markdown_table(table), ""]
    write_results(RESULTS, "lightfm_peer", result, "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
