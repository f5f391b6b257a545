"""tastebud beside the peers users would pick instead, in one run, on the same splits.

Three tasks, each with one protocol for everyone (our evaluator ranks every model's scores, so
metric code and tie handling are shared):

1. ML-100K rating prediction on the official folds u1..u5: RMSE, MAE, fit time, peak memory.
   Peers: Surprise (BaselineOnly, SVD, SVDpp, KNNBaseline) when installed.
2. ML-100K top-N: per-user random 80/20 of all ratings (seed 0); test ratings >= 4 are
   relevant; full ranking with training items excluded; @10. Variant "positives": the same on
   the rating >= 4 interactions only (train and test). Peers: implicit (ALS, BPR, BM25 item-kNN).
3. Last.fm 2K top-N on play counts: per-user random 80/20, every test artist relevant, @10.

Fit time is one plain fit (every tastebud model is first fitted once on tiny data, so numba's
compilation is not counted); peak memory is
tracemalloc's peak during a second fit (numpy buffers included; native buffers of compiled
peers that bypass Python's allocator are not).

4. EASE fit time against the plain numpy closed form (the same Gram matrix, np.linalg.inv).
5. ALS fit time against implicit's ALS called directly on a ready CSR matrix, at equal factors
   (64), iterations (15) and penalty (30; ours with reg fixed, not "auto"): median of 5 fits.

Run: .venv/bin/python benchmarks/peers.py [--quick] [--tasks rating,topn,lastfm,ease,als]
Writes benchmarks/results/peers.json and peers.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import markdown_table
from tastebud.data import Dataset, load_lastfm_2k, load_movielens_100k, load_movielens_100k_fold
from tastebud.errors import TastebudError
from tastebud.evaluation import evaluate, leaderboard
from tastebud.models import Recommender, available, create
from tastebud.split import Split, random_split

RESULTS = Path(__file__).parent / "results"


# -- peer adapters: the peer trains, our evaluator ranks -------------------------------------
@dataclasses.dataclass(kw_only=True, eq=False)
class ImplicitPeer(Recommender):
    """An `implicit` model (ALS, BPR or an item-item recommender) behind our contract."""

    kind: str = "als"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    values: str = "binary"

    def _fit(self, dataset: Dataset) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
        from implicit.nearest_neighbours import BM25Recommender
        from threadpoolctl import threadpool_limits

        matrix = dataset.matrix(self.values).astype(np.float32).tocsr()  # type: ignore[arg-type]
        self._matrix = matrix
        classes = {
            "als": AlternatingLeastSquares,
            "bpr": BayesianPersonalizedRanking,
            "bm25": BM25Recommender,
        }
        self._peer = classes[self.kind](**self.options)
        with threadpool_limits(1, "blas"):
            self._peer.fit(matrix, show_progress=False)

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        if self.kind == "bm25":
            block = np.asarray((self._matrix[users] @ self._peer.similarity).todense())
        else:
            block = self._peer.user_factors[users] @ self._peer.item_factors.T
        return block if items is None else block[:, items]


@dataclasses.dataclass(kw_only=True, eq=False)
class SurprisePeer(Recommender):
    """A Surprise algorithm behind our contract (rating prediction only)."""

    predicts_ratings = True
    needs_ratings = True
    algo: str = "SVD"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def _fit(self, dataset: Dataset) -> None:
        import surprise

        table = dataset.interactions[["user", "item", "rating"]]
        data = surprise.Dataset.load_from_df(table, surprise.Reader(rating_scale=(1, 5)))
        self._algo = getattr(surprise, self.algo)(**self.options)
        self._algo.fit(data.build_full_trainset())

    def _predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        uids = [self.users_.ids[u] if u >= 0 else "?" for u in users]
        iids = [self.items_.ids[i] if i >= 0 else "?" for i in items]
        return np.array([self._algo.predict(u, i).est for u, i in zip(uids, iids, strict=True)])

    def _score(self, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        raise TastebudError(f"Surprise's {self.algo} only predicts ratings here")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _timed_fit(model: Recommender, train: Dataset) -> tuple[float, float]:
    """Fit time of a plain fit, then peak memory of a second fit under tracemalloc (which
    slows allocation-heavy code, so it never runs while timing)."""
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    model.fit(train)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


# -- tasks -----------------------------------------------------------------------------------
def rating_task(quick: bool) -> pd.DataFrame:
    ours = [n for n in ("baseline", "svd", "svdpp", "item-knn") if n in available()]
    contenders: dict[str, Any] = {f"tastebud {n}": (lambda n=n: create(n)) for n in ours}
    members = ("svdpp", "svd", "item-knn", "user-knn", "baseline")
    if all(m in available() for m in members):
        contenders[f"tastebud blend({', '.join(members)})"] = lambda: create(
            "blend", members=members
        )
    if _has("surprise"):
        for algo in ("BaselineOnly", "SVD", "SVDpp", "KNNBaseline"):
            options: dict[str, Any] = {}
            if algo == "KNNBaseline":
                options = {
                    "sim_options": {"name": "pearson_baseline", "user_based": False},
                    "verbose": False,
                }
            if algo == "BaselineOnly":
                options = {"verbose": False}
            contenders[f"surprise {algo}"] = lambda a=algo, o=options: SurprisePeer(
                algo=a, options=o
            )
    rows = []
    folds = [1] if quick else [1, 2, 3, 4, 5]
    for fold in folds:
        train, test = load_movielens_100k_fold(fold)
        truth = test["rating"].to_numpy(dtype=float)
        for label, make in contenders.items():
            if quick and "SVDpp" in label and "surprise" in label:
                continue
            model = make()
            seconds, peak = _timed_fit(model, train)
            pred = model.predict(test)
            rows.append(
                {
                    "model": label,
                    "fold": fold,
                    "RMSE": float(np.sqrt(np.mean((pred - truth) ** 2))),
                    "MAE": float(np.mean(np.abs(pred - truth))),
                    "fit_seconds": seconds,
                    "peak_MiB": peak,
                }
            )
            print(
                f"  rating u{fold} {label}: RMSE {rows[-1]['RMSE']:.4f} in {seconds:.1f}s",
                file=sys.stderr,
            )
    table = (
        pd.DataFrame(rows).groupby("model", sort=False).mean(numeric_only=True).drop(columns="fold")
    )
    return table.sort_values("RMSE")


def _topn_contenders(kind: str) -> dict[str, Recommender]:
    ours = [
        n for n in ("popularity", "ease", "item-knn", "user-knn", "als", "bpr") if n in available()
    ]
    out: dict[str, Recommender] = {f"tastebud {n}": create(n) for n in ours}
    if all(n in available() for n in ("ease", "item-knn", "als")):
        out["tastebud blend(ease, item-knn, als)"] = create("blend")
    values = "weight" if kind == "lastfm" else "binary"
    out["implicit ALS (64 f, reg 0.05, 15 it)"] = ImplicitPeer(
        kind="als", values=values,
        options={"factors": 64, "regularization": 0.05, "iterations": 15, "random_state": 0},
    )  # fmt: skip
    out["implicit BPR (64 f, 100 it)"] = ImplicitPeer(
        kind="bpr", values=values, options={"factors": 64, "iterations": 100, "random_state": 0}
    )
    out["implicit BM25 item-kNN (K=100)"] = ImplicitPeer(
        kind="bm25", values=values, options={"K": 100}
    )
    return out


def topn_task(split: Split, kind: str, threshold: float | None) -> pd.DataFrame:
    contenders = _topn_contenders(kind)
    rows = []
    for label, model in contenders.items():
        seconds, peak = _timed_fit(model, split.train)
        result = evaluate(
            {label: model},
            split,
            k=10,
            metrics=["ndcg", "recall", "map", "precision"],
            relevance_threshold=threshold,
            beyond_accuracy=False,
            fit=False,
            progress=False,
        )
        row = leaderboard(result).iloc[0].to_dict()
        row.update(model=label, fit_seconds=seconds, peak_MiB=peak)
        rows.append(row)
        print(f"  {kind} {label}: NDCG@10 {row['NDCG@10']:.4f} in {seconds:.1f}s", file=sys.stderr)
    cols = ["model", "NDCG@10", "Recall@10", "MAP@10", "Precision@10", "fit_seconds", "peak_MiB"]
    return pd.DataFrame(rows)[cols].set_index("model").sort_values("NDCG@10", ascending=False)


def ease_task() -> pd.DataFrame:
    """EASE fit time against the plain numpy closed form on the same Gram matrix."""
    rows = []
    for label, ds in (
        ("ML-100K positives", load_movielens_100k().to_implicit(4.0)),
        ("Last.fm 2K", load_lastfm_2k()),
    ):
        model = create("ease", max_items=5_000)
        seconds, _peak = _timed_fit(model, ds)
        kept = model.kept_items_
        matrix = ds.matrix("binary")[:, kept]
        start = time.perf_counter()
        gram = (matrix.T @ matrix).toarray()
        gram[np.diag_indices_from(gram)] += model.reg
        inverse = np.linalg.inv(gram)
        weights = inverse / -np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        plain = time.perf_counter() - start
        agree = float(np.abs(weights - model.weights_).max())
        rows.append(
            {
                "model": f"{label} ({len(kept)} items)",
                "tastebud_fit_seconds": seconds,
                "numpy_closed_form_seconds": plain,
                "ratio": seconds / plain,
                "max_weight_difference": agree,
            }
        )
        print(f"  ease {label}: {seconds:.2f}s vs numpy {plain:.2f}s", file=sys.stderr)
    return pd.DataFrame(rows).set_index("model")


def als_speed_task() -> pd.DataFrame:
    """Median fit time of our ALS and of implicit's, same factors, iterations and penalty."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    ml = load_movielens_100k()
    rows = []
    for label, ds in (
        ("ML-100K, all ratings", ml),
        ("ML-100K positives", ml.to_implicit(4.0)),
        ("Last.fm 2K, play counts", load_lastfm_2k()),
    ):
        ours = create("als", n_factors=64, n_iterations=15, reg=30.0)
        kind = "weight" if ds.weight is not None else "binary"
        matrix = ds.matrix(kind).astype(np.float32)
        matrix.data = np.log2(1.0 + matrix.data)  # the same log confidence as ours

        def theirs(matrix: Any = matrix) -> None:
            engine = AlternatingLeastSquares(
                factors=64, regularization=30.0, alpha=2.5, iterations=15, random_state=0
            )
            with threadpool_limits(1, "blas"):
                engine.fit(matrix, show_progress=False)

        def mine(ours: Recommender = ours, ds: Dataset = ds) -> None:
            ours.fit(ds)

        times: dict[str, list[float]] = {"tastebud": [], "implicit": []}
        for _ in range(5):
            for name, run in (("tastebud", mine), ("implicit", theirs)):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        ours_s, peer_s = float(np.median(times["tastebud"])), float(np.median(times["implicit"]))
        rows.append(
            {
                "model": label,
                "tastebud_seconds": ours_s,
                "implicit_seconds": peer_s,
                "ratio": ours_s / peer_s,
            }
        )
        print(f"  als {label}: {ours_s:.3f}s vs implicit {peer_s:.3f}s", file=sys.stderr)
    return pd.DataFrame(rows).set_index("model")


def _warm_up() -> None:
    """Compile numba kernels before anything is timed."""
    from tastebud.data import synthetic

    tiny = synthetic(60, 40, 800, seed=0)
    for name in available():
        if name != "blend":
            create(name).fit(tiny)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one fold, skip slow peers")
    parser.add_argument("--tasks", default="rating,topn,lastfm,ease,als")
    args = parser.parse_args()
    tasks = set(args.tasks.split(","))
    _warm_up()
    sections: dict[str, pd.DataFrame] = {}
    if "rating" in tasks:
        sections["ML-100K rating prediction, official folds (mean)"] = rating_task(args.quick)
    if "topn" in tasks:
        ml = load_movielens_100k()
        split = random_split(ml, 0.2, seed=0)
        sections["ML-100K top-N, all ratings in train, test rating >= 4 relevant"] = topn_task(
            split, "ml", 4.0
        )
        positives = random_split(ml.to_implicit(4.0), 0.2, seed=0)
        sections["ML-100K top-N, positives only (rating >= 4) in train and test"] = topn_task(
            positives, "ml", None
        )
    if "ease" in tasks:
        sections["EASE fit vs the plain numpy closed form (inv of XᵀX + λI)"] = ease_task()
    if "als" in tasks:
        sections["ALS fit vs implicit called directly (64 factors, 15 iterations, λ 30)"] = (
            als_speed_task()
        )
    if "lastfm" in tasks:
        split = random_split(load_lastfm_2k(), 0.2, seed=0)
        sections["Last.fm 2K top-N, play counts"] = topn_task(split, "lastfm", None)
    versions = {
        name: __import__(name).__version__ for name in ("numpy", "scipy", "implicit", "tastebud")
    }
    if _has("surprise"):
        versions["surprise"] = __import__("surprise").__version__
    meta = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
        "versions": versions,
        "quick": args.quick,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "peers.quick" if args.quick else "peers"
    payload = {
        "meta": meta,
        "sections": {k: v.reset_index().to_dict(orient="records") for k, v in sections.items()},
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    text = [f"# tastebud vs peers\n\n{meta}\n"]
    for title, table in sections.items():
        text += [f"## {title}\n", markdown_table(table), ""]
    (RESULTS / f"{name}.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
