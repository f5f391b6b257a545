"""tastebud.spark against the library: ALS quality at matched settings on MovieLens 100K and
Last.fm 2K, and the 20M-interaction synthetic set on local[2] beside the single-process fit.

quality
    For each data set and seed: the library's random 80/20 split; tastebud's ALS and Spark
    MLlib ALS (:func:`tastebud.spark.fit_als`) at the same settings -- 64 factors, 15
    iterations, α 2.5, log confidence, exponents -0.5/-0.3, λ 30 on ML-100K and 100 on
    Last.fm -- Spark with its defaults (``exponent_shift`` 0.5, ``regParam = 0.85 λ / n̄``,
    n̄ the interactions per user) and with no offset (shift 0, ``regParam = λ / n̄``); every
    list scored by the library (NDCG@10, seen items excluded).
shift
    How the default ``exponent_shift`` was chosen, without Spark and without the test
    split: on validation splits carved from the training part of each seed's split, an
    exact ALS in numpy with MLlib's per-row penalty ``regParam · n``, exponents shifted by s and
    ``regParam = f · λ / n̄``, against the same exact ALS with tastebud's constant λ.
scale
    ``synthetic(n_users=1M, n_items=1M, n_interactions=20M, seed=0)`` (as
    ``benchmarks/scale.py``) written to Parquet by a separate process, then read and fitted
    by Spark on ``local[2]`` in a child process (64 factors, 15 iterations, λ 256: the
    settings scale.py's ALS ended with) while this process samples the RSS of the child's
    whole process tree (the Python driver and the JVM, which in local mode is driver and
    executor at once) every 0.5 s. Stages: read + checks, the fit (id indexing,
    confidences, MLlib), recommend for 1,000 users, export of the model folder. A run past
    ``--timeout`` is stopped and recorded as such.

Run: .venv/bin/python benchmarks/spark.py quality [--seeds 0,1,2] [--data ml-100k,lastfm-2k]
     .venv/bin/python benchmarks/spark.py shift [--grid 0:1,0.5:1,...]
     .venv/bin/python benchmarks/spark.py scale [--size 20000000] [--timeout 1800]
          [--driver-memory 10g]
     .venv/bin/python benchmarks/spark.py render      (the markdown again from the JSON)
Writes benchmarks/results/spark.{json,md}: quality and shift replace their sections, scale its
size's row.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_results

RESULTS = Path(__file__).parent / "results"
SETTINGS = {"n_factors": 64, "n_iterations": 15, "alpha": 2.5}
#: the data sets and the λ of each (where the library's reg="auto" search lands on them)
DATASETS = {"ml-100k": 30.0, "lastfm-2k": 100.0}
SCALE_REG = 256.0  # the λ tastebud's reg="auto" chose at 20M (benchmarks/results/scale.json)


def _load_data(name: str) -> Any:
    from tastebud.data.reference import load_lastfm_2k, load_movielens_100k

    return load_movielens_100k() if name == "ml-100k" else load_lastfm_2k()


# -- quality ----------------------------------------------------------------------------------
def _ndcg(lists: pd.DataFrame, split: Any) -> float:
    """NDCG@10 of ``lists`` (user, item, rank) by the library's definition and protocol."""
    from tastebud.evaluation import prepare_test, ranking_scores

    test = prepare_test(split)
    where = {u: i for i, u in enumerate(test.user_ids)}
    rec = np.full((len(test.user_ids), 10), -1, dtype=np.int64)
    lists = lists[lists["user"].isin(where.keys())]
    rows = lists["user"].map(where).to_numpy()
    rec[rows, lists["rank"].to_numpy() - 1] = split.train.items.to_index(
        lists["item"].to_numpy(), on_unknown="ignore"
    )
    return float(np.nanmean(ranking_scores(rec, test, ["ndcg"], 10).iloc[:, 0]))


def _exact_als(
    train: Any, lam: float, seed: int, *, per_row_reg: float | None = None, shift: float = 0.0
) -> Any:
    """Exact implicit ALS in numpy on tastebud's confidences (c = 1 + α g(x) m, m the
    user/item multiplier with exponents -0.5 + ``shift`` / -0.3 + ``shift``): λ for every
    row, or ``per_row_reg · n`` (MLlib's ALS-WR penalty). Returns the library model carrying
    those factors (for its recommend). It reproduces either engine (see ``shift``'s table)
    in a few seconds, so the shift can be chosen without a Spark session."""
    import scipy.sparse as sp

    from tastebud.models import create

    X = train.matrix("binary").tocsr()
    n_u = np.diff(X.indptr).astype(np.float64)
    n_i = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    m = n_u[rows] ** (-0.5 + shift) * np.maximum(n_i, 1)[X.indices] ** (-0.3 + shift)
    m /= m.mean()
    g = np.log2(1.0 + train.matrix("weight").tocsr().data) if train.weight is not None else 1.0
    C = sp.csr_matrix((1.0 + SETTINGS["alpha"] * g * m, X.indices, X.indptr), shape=X.shape)
    CT = C.T.tocsr()
    if per_row_reg is None:
        lam_u, lam_i = np.full(X.shape[0], lam), np.full(X.shape[1], lam)
    else:
        lam_u, lam_i = per_row_reg * n_u, per_row_reg * n_i

    def step(conf: Any, Y: np.ndarray, lam: np.ndarray) -> np.ndarray:
        gram, out = Y.T @ Y, np.zeros((conf.shape[0], Y.shape[1]))
        eye = np.eye(Y.shape[1])
        for r in range(conf.shape[0]):
            lo, hi = conf.indptr[r], conf.indptr[r + 1]
            if lo == hi:
                continue
            Yi, c = Y[conf.indices[lo:hi]], conf.data[lo:hi]
            A = gram + (Yi * (c - 1.0)[:, None]).T @ Yi + lam[r] * eye
            out[r] = np.linalg.solve(A, Yi.T @ c)
        return out

    rng = np.random.default_rng(seed)
    f = SETTINGS["n_factors"]
    U, V = rng.normal(0, 0.01, (X.shape[0], f)), rng.normal(0, 0.01, (X.shape[1], f))
    for _ in range(SETTINGS["n_iterations"]):
        U = step(C, V, lam_u)
        V = step(CT, U, lam_i)
    model = create("als", reg=lam, n_iterations=1, random_state=seed).fit(train)
    model.user_factors_, model.item_factors_ = U.astype(np.float32), V.astype(np.float32)
    model.__dict__.pop("_vector_index", None)
    return model


def _local_lists(model: Any, users: np.ndarray) -> pd.DataFrame:
    return model.recommend(list(users), k=10)[["user", "item", "rank"]]


def _stat(values: list[float]) -> dict[str, float]:
    array = np.array(values)
    return {
        "mean": float(array.mean()),
        "sd": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
    }


def quality(seeds: list[int], names: list[str]) -> dict[str, Any]:
    """Per data set and seed: tastebud's ALS, Spark's with its defaults and Spark's with no
    offset of MLlib's penalty, on the library's random 80/20 split (the test split)."""
    from tastebud.models import create
    from tastebud.spark import fit_als, from_frame, spark_session
    from tastebud.split import random_split

    spark = spark_session("local[2]")
    out: dict[str, Any] = {"seeds": seeds, "settings": SETTINGS, "data": {}}
    for name in names:
        ds, lam = _load_data(name), DATASETS[name]
        runs: list[dict[str, Any]] = []
        for seed in seeds:
            split = random_split(ds, 0.2, seed=seed)
            test_users = np.unique(split.test["user"].to_numpy())
            start = time.perf_counter()
            ours = create("als", reg=lam, n_factors=64, n_iterations=15, random_state=seed).fit(
                split.train
            )
            row: dict[str, Any] = {
                "seed": seed,
                "tastebud_ndcg": _ndcg(_local_lists(ours, test_users), split),
                "tastebud_fit_s": time.perf_counter() - start,
            }
            columns = [
                c for c in ("user", "item", "rating", "weight") if c in split.train.interactions
            ]
            frame = split.train.interactions[columns]
            train = from_frame(spark.createDataFrame(frame), source=f"{name} train seed {seed}")
            train.frame.persist()
            users = spark.createDataFrame(pd.DataFrame({"user": test_users}))
            per_user = split.train.n_interactions / split.train.n_users
            plain = {"exponent_shift": 0.0, "reg_param": lam / per_user}  # no offset at all
            for key, extra in (("spark", {}), ("spark_no_shift", plain)):
                model = fit_als(train, seed=seed, reg=lam, **SETTINGS, **extra)
                row[f"{key}_ndcg"] = _ndcg(model.recommend(10, users=users).toPandas(), split)
                row[f"{key}_fit_s"] = model.info["fit_seconds"]
                if not extra:
                    row["reg_param"] = model.info["reg_param"]
            train.frame.unpersist()
            print(json.dumps({"data": name, **row}), flush=True)
            runs.append(row)
        keys = (
            "tastebud_ndcg",
            "spark_ndcg",
            "spark_no_shift_ndcg",
            "tastebud_fit_s",
            "spark_fit_s",
        )
        summary = {k: _stat([r[k] for r in runs]) for k in keys}
        out["data"][name] = {
            "reg": lam,
            "runs": runs,
            "summary": summary,
            "gap": summary["spark_ndcg"]["mean"] / summary["tastebud_ndcg"]["mean"] - 1.0,
            "gap_no_shift": summary["spark_no_shift_ndcg"]["mean"]
            / summary["tastebud_ndcg"]["mean"]
            - 1.0,
        }
    spark.stop()
    return out


def shift_sweep(
    seeds: list[int], names: list[str], grid: list[tuple[float, float]]
) -> dict[str, Any]:
    """How ``exponent_shift`` was chosen: for each seed, on a validation split carved from the
    training part of the seed's split (random 20% of it, seed + 100; the test split is never
    read), the exact ALS with MLlib's penalty, exponents shifted by s and regParam = f · λ /
    n̄, against the same exact ALS with tastebud's constant λ."""
    from tastebud.split import random_split

    out: dict[str, Any] = {"seeds": seeds, "grid": grid, "data": {}}
    for name in names:
        lam, data = DATASETS[name], _load_data(name)
        runs = []
        for seed in seeds:
            train = random_split(data, 0.2, seed=seed).train
            val = random_split(train, 0.2, seed=seed + 100)
            users = np.unique(val.test["user"].to_numpy())
            per_user = val.train.n_interactions / val.train.n_users
            base = _ndcg(_local_lists(_exact_als(val.train, lam, seed), users), val)
            gaps = []
            for shift, factor in grid:
                model = _exact_als(
                    val.train, lam, seed, per_row_reg=factor * lam / per_user, shift=shift
                )
                gaps.append(_ndcg(_local_lists(model, users), val) / base - 1)
                print(json.dumps({"data": name, "seed": seed, "shift": shift,
                                  "factor": factor, "gap": gaps[-1]}), flush=True)  # fmt: skip
            runs.append({"seed": seed, "constant_ndcg": base, "gaps": gaps})
        mean = np.mean([r["gaps"] for r in runs], axis=0).tolist()
        out["data"][name] = {"reg": lam, "runs": runs, "mean_gap": mean}
    return out


# -- scale --------------------------------------------------------------------------------------
def _write_parquet(size: int, path: Path) -> dict[str, Any]:
    """Child: the synthetic set as Parquet (user, item), so the measured process starts lean."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tastebud.data.synthetic import synthetic

    side = max(size // 20, 100)
    start = time.perf_counter()
    data = synthetic(n_users=side, n_items=side, n_interactions=size, seed=0, progress=False)
    made = time.perf_counter() - start
    table = pa.table(
        {"user": data.users.ids[data.user_index], "item": data.items.ids[data.item_index]}
    )
    pq.write_table(table, path, row_group_size=1_000_000)
    return {
        "interactions": len(data),
        "users": data.n_users,
        "items": data.n_items,
        "generate_s": made,
    }


def _fit_child(path: Path, out: Path, driver_memory: str, reg: float) -> None:
    """Child: read, fit, recommend 1,000 users, export; a JSON line per stage to ``out``."""
    from tastebud.spark import fit_als, read_interactions, spark_session

    def log(**fields: Any) -> None:
        with out.open("a") as fh:
            fh.write(json.dumps({"t": time.time(), **fields}) + "\n")

    start = time.perf_counter()
    spark = spark_session("local[2]", conf={"spark.driver.memory": driver_memory})
    log(stage="session", seconds=time.perf_counter() - start)
    tracker = spark.sparkContext.statusTracker()
    begun = time.perf_counter()

    def progress() -> None:  # how far a run got, should it be stopped
        while True:
            time.sleep(30)
            jobs = tracker.getJobIdsForGroup(None)
            done = sum(1 for j in jobs if (i := tracker.getJobInfo(j)) and i.status == "SUCCEEDED")
            stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
            log(
                stage="progress",
                seconds=time.perf_counter() - begun,
                jobs_done=done,
                active=[f"{st.name} {st.numCompletedTasks}/{st.numTasks}" for st in stages if st],
            )

    threading.Thread(target=progress, daemon=True).start()
    start = time.perf_counter()
    data = read_interactions(spark, str(path))
    data.frame.persist()
    n = data.frame.count()
    log(stage="read", seconds=time.perf_counter() - start, interactions=n)
    start = time.perf_counter()
    model = fit_als(data, n_factors=64, n_iterations=15, reg=reg)
    log(stage="fit", seconds=time.perf_counter() - start, info=model.info)
    from pyspark.sql import functions as F

    every = max(1, int(model.info["users"]) // 1_000)
    users = model.users.where(F.col("user_index") % every == 0).limit(1_000)
    start = time.perf_counter()
    count = model.recommend(10, users=users).count()
    log(stage="recommend_1000", seconds=time.perf_counter() - start, rows=count)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        model.export(Path(folder) / "als")
        log(stage="export", seconds=time.perf_counter() - start)
    spark.stop()


def _tree_rss(pid: int) -> dict[str, float]:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out = {"total": 0.0, "java": 0.0, "python": 0.0, "cpu_s": 0.0}
    for proc in procs:
        try:
            rss = proc.memory_info().rss / 2**30
            name = proc.name()
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out["cpu_s"] += times.user + times.system
        out["total"] += rss
        if "java" in name:
            out["java"] += rss
        elif proc.pid == pid:
            out["python"] += rss
    return out


def scale(size: int, timeout: float, driver_memory: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "synthetic.parquet"
        made = _run_json([sys.executable, __file__, "_write", str(size), str(path)])
        log = Path(folder) / "stages.jsonl"
        child = subprocess.Popen(
            [sys.executable, __file__, "_fit", str(path), str(log), driver_memory, str(SCALE_REG)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        peaks = {"total": 0.0, "java": 0.0, "python": 0.0}
        cpu: list[tuple[float, float]] = []  # (unix time, CPU seconds of the tree so far)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                now = _tree_rss(child.pid)
                for key in peaks:
                    peaks[key] = max(peaks[key], now.get(key, 0.0))
                if now and (not cpu or time.time() - cpu[-1][0] >= 5):
                    cpu.append((time.time(), now["cpu_s"]))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        status = "finished"
        try:
            _stdout, stderr = child.communicate(timeout=timeout)
            if child.returncode != 0:
                status = f"failed (exit {child.returncode}): {stderr.strip().splitlines()[-1:]}"
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            status = f"stopped at the {timeout:.0f} s timeout"
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        stages = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {
        "size": size,
        "data": made,
        "driver_memory": driver_memory,
        "reg": SCALE_REG,
        "status": status,
        "wall_s": wall,
        "stages": stages,
        "peak_rss_gib": peaks,
        "cpu_samples": cpu,
    }


def _run_json(command: list[str]) -> dict[str, Any]:
    res = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- results ------------------------------------------------------------------------------------
def _markdown(result: dict[str, Any]) -> str:
    lines = ["# Spark (tastebud.spark) against the library", ""]
    lines.append(
        f"{result['platform']}. A shared machine: other jobs ran beside these, so the times "
        "are noisy and slow (the 1-minute load average at the start and end of each part is "
        "given with it)."
    )
    q = result.get("quality")
    if q and "data" in q:
        lines += [
            "",
            "## Quality at matched settings (the test split)",
            "",
            "The library's random 80/20 split per seed; 64 factors, 15 iterations, α 2.5, log "
            "confidence, exponents -0.5/-0.3 and λ as below; NDCG@10 by the library, seeds "
            f"{', '.join(map(str, q['seeds']))} (mean ± sd). Spark with its defaults, which "
            "offset MLlib's per-row penalty, and with no offset (tastebud's confidences as they "
            "are, regParam = λ / interactions per user: the penalty left to cost what it "
            f"costs). Load average {_load(q)}.",
        ]
        for name, d in q["data"].items():
            s = d["summary"]
            lines += [
                "",
                f"### {name}, λ {d['reg']:g} (regParam {d['runs'][0]['reg_param']:.4f})",
                "",
                "| model | NDCG@10 | per seed | fit s |",
                "|---|---:|---|---:|",
            ]
            for label, key, fit in (
                ("tastebud ALS (implicit engine, CG)", "tastebud_ndcg", "tastebud_fit_s"),
                (
                    "Spark MLlib ALS, defaults (shift 0.5, regParam = 0.85 λ / n̄)",
                    "spark_ndcg",
                    "spark_fit_s",
                ),
                (
                    "Spark MLlib ALS, no offset (shift 0, regParam = λ / n̄)",
                    "spark_no_shift_ndcg",
                    None,
                ),
            ):
                per = ", ".join(f"{r[key]:.4f}" for r in d["runs"])
                took = f"{s[fit]['mean']:.1f}" if fit else ""
                lines.append(
                    f"| {label} | {s[key]['mean']:.4f} ± {s[key]['sd']:.4f} | {per} | {took} |"
                )
            lines += [
                "",
                f"Spark / tastebud - 1 = **{d['gap']:+.1%}** with Spark's defaults (target: "
                f"within 2%), {d['gap_no_shift']:+.1%} with no offset.",
            ]
    sweep = result.get("shift_sweep")
    if sweep:
        seeds = sweep["seeds"]
        lines += [
            "",
            "## How the exponent shift was chosen (validation splits, never the test split)",
            "",
            "Per seed: the training part of the library's 80/20 split, itself split 80/20 at "
            "random (seed + 100). The exact ALS in numpy with MLlib's penalty regParam · n per "
            "row, both confidence exponents shifted by s and regParam = f · λ / n̄, against the "
            "same exact ALS with tastebud's constant λ: NDCG@10 on the validation part, "
            "relative to the constant λ. Load average "
            f"{_load(sweep)}.",
            "",
            "| s | f | "
            + " | ".join(f"{n} seed {x}" for n in sweep["data"] for x in seeds)
            + " | "
            + " | ".join(f"{n} mean" for n in sweep["data"])
            + " | both, mean |",
            "|---:|---:|" + "---:|" * (len(sweep["data"]) * (len(seeds) + 1) + 1),
        ]
        for at, (shift, factor) in enumerate(sweep["grid"]):
            cells = [f"{r['gaps'][at]:+.1%}" for d in sweep["data"].values() for r in d["runs"]]
            means = [d["mean_gap"][at] for d in sweep["data"].values()]
            cells += [f"{m:+.1%}" for m in means] + [f"**{np.mean(means):+.1%}**"]
            lines.append(f"| {shift:g} | {factor:g} | " + " | ".join(cells) + " |")
    runs = result.get("scale_runs") or {}
    if runs:
        lines += [
            "",
            "## Synthetic sets on local[2], beside the single-process fit",
            "",
            "`synthetic(n_users=n/20, n_items=n/20, n_interactions=n, seed=0)` (as "
            "`benchmarks/scale.py`) written as Parquet by another process; Spark local[2] "
            "reads, checks and fits it (64 factors, 15 iterations, λ 256 as scale.py's ALS "
            "ended with; each row's regParam below: these rows were run before the exponent "
            "shift and the 0.85 factor, at regParam = 256 / interactions per user and "
            "tastebud's confidences), recommends 1,000 users and "
            "exports the model folder. Peak RSS: the child's whole process tree (the Python "
            "driver and the JVM, driver and executor at once in local mode) sampled every "
            "0.5 s. Load average: the machine's, at the start and the end of the run.",
            "",
            "| interactions | run | status | read s | fit s | recommend 1,000 s | export s "
            "| peak RSS GiB (JVM + Python) | load average |",
            "|---:|---|---|---:|---:|---:|---:|---:|---|",
        ]
        notes: list[str] = []
        for size in sorted(runs, key=int):
            sc = runs[size]
            stages = {st["stage"]: st for st in sc["stages"]}
            peaks = sc["peak_rss_gib"]

            def sec(name: str, stages: dict[str, Any] = stages) -> str:
                return f"{stages[name]['seconds']:.1f}" if name in stages else "—"

            lines.append(
                f"| {int(size):,} | Spark MLlib ALS, local[2], driver {sc['driver_memory']} | "
                f"{sc['status']} | {sec('read')} | {sec('fit')} | {sec('recommend_1000')} | "
                f"{sec('export')} | {peaks['total']:.2f} ({peaks['java']:.2f} + "
                f"{peaks['python']:.2f}) | {_load(sc)} |"
            )
            progress = [st for st in sc["stages"] if st["stage"] == "progress"]
            if progress and "fit" not in stages:
                last = progress[-1]
                notes.append(
                    f"{int(size):,}: the last progress record, {last['seconds']:.0f} s after "
                    f"the session started, counts {last['jobs_done']} Spark jobs finished; "
                    f"running: {'; '.join(last['active']) or 'nothing'}."
                )
            if "fit" in stages:
                info = stages["fit"]["info"]
                cores = _cpu_between(
                    sc, stages["fit"]["t"] - stages["fit"]["seconds"], stages["fit"]["t"]
                )
                used = "" if cores is None else f"; the fit used {cores:.0f} CPU-seconds"
                notes.append(
                    f"{int(size):,}: {info['users']:,} users x {info['items']:,} items, "
                    f"{info['interactions']:,} interactions, regParam {info['reg_param']:.4g}"
                    f"{used}."
                )
            halves = _half_iterations(sc)
            if halves:
                wall, cpu_s = halves
                per = "" if cpu_s is None else f", {cpu_s:.0f} CPU-seconds"
                notes.append(
                    f"{int(size):,}: one ALS half-iteration (MLlib's per-half-iteration "
                    f"aggregate job to the next) took {wall:.0f} s wall{per} (median)."
                )
        single = result.get("single_process")
        if single:
            lines.append(
                f"| 20,000,000 | tastebud ALS, one process (scale.py), defaults incl. the λ "
                f"search | fitted |  | {single['fit_s']:.1f} | {single['recommend_1000_s']:.2f} "
                f"|  | {single['peak_rss_gib']:.2f} |  |"
            )
            lines.append(
                f"| 20,000,000 | tastebud ALS, one process, the same fixed settings "
                f"(scale.py) | fitted |  | {single['fixed_fit_s']:.1f} |  |  |  |  |"
            )
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def _cpu_between(run: dict[str, Any], start: float, end: float) -> float | None:
    """CPU seconds of the child's process tree between two unix times (the samples
    nearest inside them), or None without samples."""
    samples = [s for s in run.get("cpu_samples", []) if start - 5 <= s[0] <= end + 5]
    if len(samples) < 2:
        return None
    return float(samples[-1][1] - samples[0][1])


def _half_iterations(run: dict[str, Any]) -> tuple[float, float | None] | None:
    """Median wall and CPU seconds between the progress records where the count of
    finished jobs grew while MLlib's per-half-iteration aggregate (the Gram matrix YᵀY,
    ALS.scala computeYtY) was running: one half-iteration each."""
    records = [s for s in run["stages"] if s["stage"] == "progress"]
    marks = [
        r["t"]
        for before, r in itertools.pairwise(records)
        if r["jobs_done"] > before["jobs_done"]
        and any("aggregate at ALS.scala" in a for a in before["active"])
    ]
    if len(marks) < 2:
        return None
    walls = np.diff(marks)
    cpus = [_cpu_between(run, a, b) for a, b in itertools.pairwise(marks)]
    known = [c for c in cpus if c is not None]
    return float(np.median(walls)), (float(np.median(known)) if known else None)


def _load(part: dict[str, Any]) -> str:
    loads = part.get("load_average")
    return (
        "not recorded" if not loads else f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end"
    )


def _single_process() -> dict[str, float] | None:
    path = RESULTS / "scale.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text()).get("rows", {}).get("20000000/als")
    if not row or row.get("status") != "fitted":
        return None
    return {
        "fit_s": row["fit_s"],
        "peak_rss_gib": row["peak_rss_gib"],
        "recommend_1000_s": row["recommend_1000_s"],
        "fixed_fit_s": row.get("implicit", {}).get("tastebud_fixed_fit_s", float("nan")),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_write":
        print(json.dumps(_write_parquet(int(sys.argv[2]), Path(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_fit":
        _fit_child(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["quality", "shift", "scale", "render"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=",".join(DATASETS), help="data sets (comma-separated)")
    parser.add_argument(
        "--grid",
        default="0:1,0.5:0.7,0.5:0.85,0.5:1",
        help="shift: the (exponent shift s, regParam factor f) pairs tried, as s:f,...",
    )
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--driver-memory", default="10g")
    args = parser.parse_args()
    path = RESULTS / "spark.json"
    if args.part == "render":  # the markdown again from the JSON (after a format change)
        result = json.loads(path.read_text())
        write_results(RESULTS, "spark", result, _markdown(result))
        print(_markdown(result))
        return
    done: dict[str, Any] = {}
    load_start = os.getloadavg()[0]
    names = [n for n in args.data.split(",") if n]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        parser.error(f"unknown data set(s): {', '.join(unknown)} (known: {', '.join(DATASETS)})")
    if args.part == "quality":
        part = done["quality"] = quality([int(s) for s in args.seeds.split(",")], names)
    elif args.part == "shift":
        grid = [tuple(float(x) for x in pair.split(":")) for pair in args.grid.split(",")]
        seeds = [int(x) for x in args.seeds.split(",")]
        part = done["shift_sweep"] = shift_sweep(seeds, names, grid)  # type: ignore[arg-type]
    else:
        part = scale(args.size, args.timeout, args.driver_memory)
        old = json.loads(path.read_text()).get("scale_runs", {}) if path.exists() else {}
        done["scale_runs"] = {**old, str(args.size): part}
        done["single_process"] = _single_process()
    part["load_average"] = [load_start, os.getloadavg()[0]]
    # each part replaces its own section of what is there (the parts run apart)
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result["platform"] = (
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    result.update(done)
    write_results(RESULTS, "spark", result, _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
