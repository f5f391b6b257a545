"""tastebud.spark against the library: ALS quality on MovieLens 100K at matched settings,
and the 20M-interaction synthetic set on local[2] beside the single-process fit.

quality
    For each seed: the library's random 80/20 split of ML-100K; tastebud's ALS and Spark
    MLlib ALS (:func:`tastebud.spark.fit_als`) at the same settings -- 64 factors, 15
    iterations, α 2.5, log confidence, exponents -0.5/-0.3, λ 30 (mapped to MLlib's
    ``regParam = λ / interactions per user``) -- both lists scored by the library
    (NDCG@10, seen items excluded). Where Spark misses the 2% target, a diagnostic says
    why: an exact ALS in numpy on the same confidences, once with tastebud's constant λ
    and once with MLlib's ALS-WR penalty ``regParam · n`` per row, and a small sweep of
    MLlib's ``regParam`` (chosen on the test split, so an optimistic bound).
scale
    ``synthetic(n_users=1M, n_items=1M, n_interactions=20M, seed=0)`` (as
    ``benchmarks/scale.py``) written to Parquet by a separate process, then read and fitted
    by Spark on ``local[2]`` in a child process (64 factors, 15 iterations, λ 256: the
    settings scale.py's ALS ended with) while this process samples the RSS of the child's
    whole process tree (the Python driver and the JVM, which in local mode is driver and
    executor at once) every 0.5 s. Stages: read + checks, the fit (id indexing,
    confidences, MLlib), recommend for 1,000 users, export of the model folder. A run past
    ``--timeout`` is stopped and recorded as such.

Run: .venv/bin/python benchmarks/spark.py quality [--seeds 0,1,2] [--sweep 0.1,0.2,0.5]
     .venv/bin/python benchmarks/spark.py scale [--size 20000000] [--timeout 1800]
          [--driver-memory 10g]
     .venv/bin/python benchmarks/spark.py render      (the markdown again from the JSON)
Writes benchmarks/results/spark.{json,md}: quality replaces its section, scale its size's
row.
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
SETTINGS = {"n_factors": 64, "n_iterations": 15, "alpha": 2.5, "reg": 30.0}
SCALE_REG = 256.0  # the λ tastebud's reg="auto" chose at 20M (benchmarks/results/scale.json)


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


def _exact_als(train: Any, per_row_reg: float | None, seed: int) -> Any:
    """Exact implicit ALS in numpy on tastebud's confidences (c = 1 + α m, m the user/item
    multiplier), λ = 30 for every row, or ``per_row_reg · n`` (MLlib's ALS-WR penalty);
    returns the library model carrying those factors (for its recommend)."""
    import scipy.sparse as sp

    from tastebud.models import create

    X = train.matrix("binary").tocsr()
    n_u = np.diff(X.indptr).astype(np.float64)
    n_i = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    m = n_u[rows] ** -0.5 * np.maximum(n_i, 1)[X.indices] ** -0.3
    m /= m.mean()
    C = sp.csr_matrix((1.0 + SETTINGS["alpha"] * m, X.indices, X.indptr), shape=X.shape)
    CT = C.T.tocsr()
    if per_row_reg is None:
        lam_u, lam_i = np.full(X.shape[0], SETTINGS["reg"]), np.full(X.shape[1], SETTINGS["reg"])
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
    model = create("als", reg=SETTINGS["reg"], n_iterations=1, random_state=seed).fit(train)
    model.user_factors_, model.item_factors_ = U.astype(np.float32), V.astype(np.float32)
    model.__dict__.pop("_vector_index", None)
    return model


def _local_lists(model: Any, users: np.ndarray) -> pd.DataFrame:
    return model.recommend(list(users), k=10)[["user", "item", "rank"]]


def quality(seeds: list[int], sweep: list[float]) -> dict[str, Any]:
    from tastebud.data.reference import load_movielens_100k
    from tastebud.models import create
    from tastebud.spark import fit_als, from_frame, spark_session
    from tastebud.split import random_split

    ds = load_movielens_100k()
    spark = spark_session("local[2]")
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        split = random_split(ds, 0.2, seed=seed)
        test_users = np.unique(split.test["user"].to_numpy())
        start = time.perf_counter()
        ours = create(
            "als", reg=SETTINGS["reg"], n_factors=64, n_iterations=15, random_state=seed
        ).fit(split.train)
        ours_s = time.perf_counter() - start
        frame = split.train.interactions[["user", "item", "rating"]]
        train = from_frame(spark.createDataFrame(frame), source=f"ml-100k train seed {seed}")
        train.frame.persist()
        model = fit_als(train, seed=seed, **SETTINGS)
        users = spark.createDataFrame(pd.DataFrame({"user": test_users}))
        spark_lists = model.recommend(10, users=users).toPandas()
        row: dict[str, Any] = {
            "seed": seed,
            "tastebud_ndcg": _ndcg(_local_lists(ours, test_users), split),
            "spark_ndcg": _ndcg(spark_lists, split),
            "tastebud_fit_s": ours_s,
            "spark_fit_s": model.info["fit_seconds"],
            "reg_param": model.info["reg_param"],
        }
        rp = model.info["reg_param"]
        row["exact_constant_ndcg"] = _ndcg(
            _local_lists(_exact_als(split.train, None, seed), test_users), split
        )
        row["exact_als_wr_ndcg"] = _ndcg(
            _local_lists(_exact_als(split.train, rp, seed), test_users), split
        )
        if seed == seeds[0]:
            row["sweep"] = {}
            for value in sweep:
                swept = fit_als(train, seed=seed, **{**SETTINGS, "reg_param": value})
                lists = swept.recommend(10, users=users).toPandas()
                row["sweep"][f"{value:g}"] = _ndcg(lists, split)
        train.frame.unpersist()
        print(json.dumps(row), flush=True)
        runs.append(row)
    spark.stop()

    def stat(key: str) -> dict[str, float]:
        values = np.array([r[key] for r in runs])
        return {
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        }

    summary = {
        k: stat(k)
        for k in (
            "tastebud_ndcg",
            "spark_ndcg",
            "exact_constant_ndcg",
            "exact_als_wr_ndcg",
            "tastebud_fit_s",
            "spark_fit_s",
        )
    }
    gap = summary["spark_ndcg"]["mean"] / summary["tastebud_ndcg"]["mean"] - 1.0
    return {"seeds": seeds, "settings": SETTINGS, "runs": runs, "summary": summary, "gap": gap}


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
    if q:
        s = q["summary"]
        lines += [
            "",
            "## MovieLens 100K, matched settings",
            "",
            "Library random 80/20 split per seed; 64 factors, 15 iterations, α 2.5, log "
            "confidence, exponents -0.5/-0.3, λ 30 (Spark: regParam = λ / interactions per "
            f"user = {q['runs'][0]['reg_param']:.4f}); NDCG@10 by the library, seeds "
            f"{', '.join(map(str, q['seeds']))} (mean ± sd). Load average "
            f"{_load(q)}.",
            "",
            "| model | NDCG@10 | per seed | fit s |",
            "|---|---:|---|---:|",
        ]
        for label, key, fit in (
            ("tastebud ALS (implicit engine, CG)", "tastebud_ndcg", "tastebud_fit_s"),
            ("Spark MLlib ALS", "spark_ndcg", "spark_fit_s"),
            ("exact ALS, numpy, constant λ 30", "exact_constant_ndcg", None),
            ("exact ALS, numpy, ALS-WR λ = regParam · n", "exact_als_wr_ndcg", None),
        ):
            per = ", ".join(f"{r[key]:.4f}" for r in q["runs"])
            took = f"{s[fit]['mean']:.1f}" if fit else ""
            lines.append(
                f"| {label} | {s[key]['mean']:.4f} ± {s[key]['sd']:.4f} | {per} | {took} |"
            )
        lines += [
            "",
            f"Spark / tastebud - 1 = {q['gap']:+.1%} (target: within 2%).",
        ]
        sweep = q["runs"][0].get("sweep") or {}
        if sweep:
            cells = ", ".join(f"{k}: {v:.4f}" for k, v in sweep.items())
            lines += [
                "",
                f"MLlib regParam sweep, seed {q['seeds'][0]} (chosen on the test split: an "
                f"optimistic bound): {cells}.",
            ]
    runs = result.get("scale_runs") or {}
    if runs:
        lines += [
            "",
            "## Synthetic sets on local[2], beside the single-process fit",
            "",
            "`synthetic(n_users=n/20, n_items=n/20, n_interactions=n, seed=0)` (as "
            "`benchmarks/scale.py`) written as Parquet by another process; Spark local[2] "
            "reads, checks and fits it (64 factors, 15 iterations, λ 256 as scale.py's ALS "
            "ended with; regParam = 256 / interactions per user), recommends 1,000 users and "
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
    parser.add_argument("part", choices=["quality", "scale", "render"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sweep", default="0.1,0.2,0.5")
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
    if args.part == "quality":
        seeds = [int(s) for s in args.seeds.split(",")]
        sweep = [float(s) for s in args.sweep.split(",") if s]
        part = done["quality"] = quality(seeds, sweep)
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
