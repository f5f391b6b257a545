"""tastebud.spark in local mode: reading and checks, MLlib ALS with tastebud's confidence
scheme, the library's metrics computed in Spark, batch top-k, the exported model folder,
and ``tastebud spark ...``.

One SparkSession (local[2], quiet) serves the whole module: starting the JVM is most of
the cost. Known answers: the metrics equal the library's on MovieLens 100K given the same
lists; one MLlib user step is reproduced by numpy from the confidences the module
documents; the exported folder lists what Spark lists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java 17+ (no java on PATH, JAVA_HOME unset)", allow_module_level=True)

from tastebud.data.sample import load_sample
from tastebud.errors import DataError, InvalidInputError, TastebudError
from tastebud.models import load
from tastebud.spark import als as spark_als
from tastebud.spark import io as spark_io
from tastebud.spark._session import check_master, spark_session
from tastebud.spark.evaluation import evaluate as spark_evaluate
from tastebud.spark.metrics import ranking_metrics

pytestmark = [
    pytest.mark.spark,
    # PySpark 4.3's notices about pandas 3 on every conversion (tests convert small tables)
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

SMALL = {"n_factors": 8, "n_iterations": 3, "num_blocks": 2}


@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spark") / "sample.csv"
    load_sample().interactions.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def sample_data(spark, sample_csv):
    data = spark_io.read_interactions(spark, str(sample_csv))
    data.frame.persist()
    return data


@pytest.fixture(scope="module")
def sample_model(sample_data):
    return spark_als.fit_als(sample_data, **SMALL)


# -- reading and checks ---------------------------------------------------------------------------
def test_master_urls_are_checked_before_anything_starts():
    for good in (
        "local",
        "local[2]",
        "local[*]",
        "local[4,2]",
        "yarn",
        "spark://h:7077",
        "k8s://https://h:6443",
    ):
        assert check_master(good) == good
    for bad in ("local[0]", "lokal[2]", "local[two]", "http://h", ""):
        with pytest.raises(InvalidInputError, match="not a Spark master URL"):
            check_master(bad)


def test_reading_names_the_file_and_column(spark, tmp_path):
    with pytest.raises(DataError, match=r"missing\.csv: no such file"):
        spark_io.read_interactions(spark, str(tmp_path / "missing.csv"))
    path = tmp_path / "bad.csv"
    path.write_text("user,item,rating\na,x,4\nb,y,lots\nc,z,5\n")
    with pytest.raises(
        DataError,
        match=r"bad\.csv: column 'rating': 1 of 3 rows with a value that is not a number "
        r"\(e\.g\. 'lots'\)",
    ):
        spark_io.read_interactions(spark, str(path))
    with pytest.raises(
        DataError,
        match=r"bad\.csv: column 'stars': no such column; columns found: \[user, item, rating\]",
    ):
        spark_io.read_interactions(spark, str(path), rating="stars")
    with pytest.warns(UserWarning, match="skipped rows"):
        kept = spark_io.read_interactions(spark, str(path), on_bad_rows="skip")
    assert kept.frame.count() == 2


def test_ids_keep_their_type_and_repeats_fold_like_the_library(spark, tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("user,item,weight\n1,007,1\n1,007,2\n2,7,1\n10,8,0.5\n")
    data = spark_io.read_interactions(spark, str(path))
    types = dict(data.frame.dtypes)
    assert types["user"] == "bigint"  # every user id spells an integer
    assert types["item"] == "string"  # "007" is not canonical: ids stay text
    rows = {(r.user, r.item): r.weight for r in data.frame.collect()}
    assert rows == {(1, "007"): 3.0, (2, "7"): 1.0, (10, "8"): 0.5}  # "sum" adds weights


def test_random_split_follows_the_library_rule(spark):
    frame = load_sample().interactions[["user", "item"]]
    data = spark_io.from_frame(spark.createDataFrame(frame))
    train, test = spark_io.random_split(data, 0.2, seed=3)
    n_train = train.frame.groupBy("user").count().toPandas().set_index("user")["count"]
    n_test = test.frame.groupBy("user").count().toPandas().set_index("user")["count"]
    n = frame.groupby("user").size()
    expected = np.minimum(np.rint(0.2 * n), np.maximum(n - 1, 0))
    assert n_test.reindex(n.index, fill_value=0).to_numpy().tolist() == expected.tolist()
    assert (n_train.reindex(n.index) + n_test.reindex(n.index, fill_value=0) == n).all()
    again, _ = spark_io.random_split(data, 0.2, seed=3)
    assert again.frame.exceptAll(train.frame).count() == 0


# -- ALS -----------------------------------------------------------------------------------------
def test_mllib_sees_tastebud_confidences_with_the_shift(sample_model):
    """One user step with the item factors fixed, in numpy: (YᵀY + Yᵀ(C_u - I)Y +
    regParam·n_u I) x_u = YᵀC_u 1, C = 1 + α g(x) m', m' with both exponents shifted by
    0.5 -- MLlib's user factors, so MLlib solved the documented problem. The model keeps
    tastebud's own normaliser (unshifted) for the histories an export folds in."""
    model = sample_model
    ratings = model.ratings.toPandas()
    users = ratings["user_index"].to_numpy()
    items = ratings["item_index"].to_numpy()
    n_u = np.bincount(users).astype(float)
    n_i = np.bincount(items).astype(float)
    own = n_u[users] ** -0.5 * n_i[items] ** -0.3
    assert model.info["scale_norm"] == pytest.approx(own.mean(), rel=1e-9)
    m = n_u[users] ** 0.0 * n_i[items] ** 0.2
    assert model.info["mllib_scale_norm"] == pytest.approx(m.mean(), rel=1e-9)
    m /= m.mean()
    # the sample has ratings but no weights: values="auto" -> x = 1, g(1) = 1
    np.testing.assert_allclose(ratings["value"].to_numpy(), m, rtol=1e-6)
    Y = model.item_factors().astype(np.float64)
    X = model.user_factors().astype(np.float64)
    C = sp.csr_matrix((1.0 + 2.5 * m, (users, items)), shape=(len(X), len(Y)))
    reg = model.info["reg_param"]
    assert reg == pytest.approx(0.85 * 30.0 / (len(users) / len(X)))
    assert model.info["reg_equivalent"] == pytest.approx(30.0)  # what an export folds in with
    for u in range(0, len(X), 37):
        row = C[u]
        Yi, c = Y[row.indices], row.data
        A = Y.T @ Y + (Yi * (c - 1.0)[:, None]).T @ Yi + reg * len(c) * np.eye(Y.shape[1])
        np.testing.assert_allclose(np.linalg.solve(A, Yi.T @ c), X[u], atol=2e-5)


def test_batch_top_k_excludes_seen_and_export_lists_the_same(sample_model, tmp_path):
    model = sample_model
    top = model.recommend(5).toPandas()
    seen = model.ratings.join(model.users, "user_index").join(model.items, "item_index")
    seen_pairs = set(map(tuple, seen.select("user", "item").toPandas().to_numpy()))
    assert not seen_pairs & set(map(tuple, top[["user", "item"]].to_numpy()))
    assert all(sorted(ranks) == [1, 2, 3, 4, 5] for _, ranks in top.groupby("user")["rank"])

    folder = model.export(tmp_path / "als")
    local = load(folder)
    assert type(local).__name__ == "ALS" and local.name == "als"
    assert local.users_.ids[0] == "u001"  # the ids as the data had them
    np.testing.assert_array_equal(local.item_factors_, model.item_factors())
    # histories are folded in as tastebud would: its λ, exponents and normaliser (no shift)
    assert local.reg_ == pytest.approx(30.0)
    assert (local.user_exponent, local.item_exponent) == (-0.5, -0.3)
    assert local.scale_norm_ == pytest.approx(model.info["scale_norm"])
    ours = local.recommend(local.users_.ids.tolist(), k=5)
    merged = top.merge(ours, on=["user", "rank"], suffixes=("_spark", "_local"))
    assert len(merged) == len(top) == len(ours)
    differ = merged["item_spark"] != merged["item_local"]
    # the same lists, but for float32 near-ties that BLAS may order either way
    assert differ.mean() < 0.01
    np.testing.assert_allclose(merged["score_spark"], merged["score_local"], rtol=1e-5, atol=1e-6)


def test_rating_prediction_als(sample_data, tmp_path):
    train, test = spark_io.random_split(sample_data, 0.2, seed=0)
    model = spark_als.fit_als(train, implicit=False, reg_param=0.1, **SMALL)
    summary, per_user = spark_evaluate(model, test, k=5)
    ratings = test.frame.toPandas()["rating"]
    baseline = float(np.sqrt(((ratings - ratings.mean()) ** 2).mean()))
    assert 0 < summary["RMSE"] < 1.5 * baseline
    assert summary["users"] == per_user.count() > 0
    with pytest.raises(InvalidInputError, match="only the implicit-feedback ALS exports"):
        model.export(tmp_path / "explicit")
    for bad, message in (
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"exponent_shift": float("nan")}, "exponent_shift must be between -2 and 2"),
        ({"exponent_shift": 3}, "exponent_shift must be between -2 and 2"),
        ({"exponent_shift": True}, "exponent_shift must be between -2 and 2"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            spark_als.fit_als(train, **bad)


# -- metrics ------------------------------------------------------------------------------------
@pytest.mark.reference_data
@pytest.mark.slow
def test_metrics_equal_the_library_on_movielens(spark):
    """The same top-10 lists (a local ALS on ML-100K, random 80/20 split) scored by the
    library and in Spark: every metric, every user, within 1e-6."""
    from conftest import require_reference
    from tastebud.data.reference import load_movielens_100k
    from tastebud.evaluation import prepare_test, ranking_scores
    from tastebud.models import create
    from tastebud.split import random_split

    ds = load_movielens_100k(require_reference("ml-100k"))
    split = random_split(ds, 0.2, seed=0)
    test = prepare_test(split)
    model = create("als", reg=30.0, n_iterations=3, n_factors=16).fit(split.train)
    rec, _ = model.recommend_indices(test.users, 10, exclude=model.seen_)
    rec[::7, 9] = rec[::7, 0]  # some repeated items (a miss after their first position)
    rec[::11, 6:] = -1  # and some short lists
    names = ["precision", "recall", "f1", "map", "ndcg", "mrr", "hit_rate", "auc"]
    local = ranking_scores(rec, test, names, 10)

    n_users, length = rec.shape
    rows = np.repeat(np.arange(n_users), length)
    ranks = np.tile(np.arange(1, length + 1), n_users)
    keep = rec.ravel() >= 0
    lists = pd.DataFrame(
        {
            "user": test.user_ids[rows[keep]],
            "item": split.train.items.ids[rec.ravel()[keep]],
            "rank": ranks[keep],
        }
    )
    counts = pd.DataFrame({"user": test.user_ids, "n_candidates": test.n_candidates})
    ours = ranking_metrics(
        spark.createDataFrame(lists),
        spark.createDataFrame(split.test[["user", "item"]]),
        10,
        names,
        n_candidates=spark.createDataFrame(counts),
    )
    ours = ours.toPandas().set_index("user").loc[local.index]
    for label in local.columns:
        np.testing.assert_allclose(ours[label], local[label], atol=1e-6, err_msg=label)


# -- the command line ---------------------------------------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from tastebud.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["spark", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_cli_bad_master_is_one_line_without_starting_spark():
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "tastebud"),
            "spark",
            "fit",
            "x.csv",
            "--out",
            "m",
            "--master",
            "local[two]",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --master local[two]: not a Spark master URL; use local[N], local[*], yarn, "
        "spark://HOST:PORT or k8s://https://HOST:PORT"
    ]


def test_cli_bad_input_is_one_line(spark, capsys, tmp_path, sample_csv):
    code, _out, err = _cli(
        capsys,
        "fit",
        str(tmp_path / "nope.csv"),
        "--out",
        str(tmp_path / "m"),
        "--master",
        "local[2]",
    )
    assert code == 2 and err.strip().splitlines() == [
        f"error: {tmp_path / 'nope.csv'}: no such file or folder"
    ]
    code, _out, err = _cli(
        capsys, "evaluate", str(sample_csv), "-c", "rating=stars", "--master", "local[2]"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "column 'stars': no such column; columns found: [user, item, rating, timestamp]" in err


@pytest.mark.slow
def test_cli_fit_evaluate_recommend(spark, capsys, tmp_path, sample_csv):
    flags = ["--master", "local[2]", "--factors", "4", "--iterations", "1", "--blocks", "2"]
    code, out, err = _cli(capsys, "fit", str(sample_csv), "--out", str(tmp_path / "model"), *flags)
    assert code == 0, err
    assert "saved to" in out
    assert load(tmp_path / "model").recommend(["u001"], k=3)["rank"].tolist() == [1, 2, 3]

    code, out, err = _cli(
        capsys, "evaluate", str(sample_csv), "--json", "--metric", "ndcg", "--metric", "auc", *flags
    )
    assert code == 0, err
    summary = json.loads(out)
    assert 0 < summary["NDCG@10"] <= 1 and 0 < summary["AUC@10"] <= 1 and summary["users"] > 0

    target = tmp_path / "recs"
    code, out, err = _cli(
        capsys, "recommend", str(sample_csv), "--out", str(target), "--k", "3", *flags
    )
    assert code == 0, err
    recs = pd.read_parquet(target)
    assert list(recs.columns) == ["user", "item", "score", "rank"]
    assert recs.groupby("user").size().eq(3).all() and recs["user"].nunique() == 300
    code, _out, err = _cli(capsys, "recommend", str(sample_csv), "--out", str(target), *flags)
    assert code == 2 and "exists; pass --overwrite" in err


def test_help_does_not_import_pyspark():
    code = "import sys, tastebud.cli; assert 'pyspark' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_spark_errors_are_tastebud_errors(spark):
    with pytest.raises(TastebudError, match="unknown ALS setting"):
        spark_als.fit_als(
            spark_io.from_frame(spark.createDataFrame([(1, 2)], "user long, item long")), rank=3
        )
