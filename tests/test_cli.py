"""The command line as a user runs it (subprocess of the installed console script)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TASTEBUD = str(Path(sys.executable).parent / "tastebud")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TASTEBUD, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_every_command():
    res = run("--help")
    assert res.returncode == 0
    for command in ("demo", "datasets", "evaluate", "fit", "recommend", "import", "serve"):
        assert command in res.stdout
    assert run("evaluate", "--help").returncode == 0


def test_demo_prints_leaderboard_and_writes_report(tmp_path):
    # a few models: the whole demo runs in test_fresh_install.py
    models = ["-m", "popularity", "-m", "baseline", "-m", "item-knn"]
    res = run("demo", "--out", str(tmp_path / "report"), *models)
    assert res.returncode == 0, res.stderr
    assert "NDCG@10" in res.stdout and "popularity" in res.stdout and "baseline" in res.stdout
    assert (tmp_path / "report" / "report.md").exists()
    assert (tmp_path / "report" / "metrics.png").stat().st_size > 1000


def test_datasets_lists_names():
    res = run("datasets")
    assert res.returncode == 0
    for name in ("sample", "synthetic", "ml-100k", "lastfm-2k"):
        assert name in res.stdout


def test_fit_then_recommend_round_trip(tmp_path):
    model_dir = tmp_path / "model"
    res = run(
        "fit",
        "--dataset",
        "sample",
        "--model",
        "trending",
        "--param",
        "half_life_days=30",
        "--out",
        str(model_dir),
    )
    assert res.returncode == 0, res.stderr
    res = run("recommend", str(model_dir), "--user", "u001", "--user", "stranger", "--k", "3")
    assert res.returncode == 0, res.stderr
    recs = pd.read_csv(pd.io.common.StringIO(res.stdout))
    assert list(recs.columns) == ["user", "item", "score", "rank"]  # the sample has no titles
    assert recs.groupby("user").size().to_dict() == {"stranger": 3, "u001": 3}
    out = tmp_path / "recs.json"
    assert (
        run("recommend", str(model_dir), "--all-users", "--k", "2", "--out", str(out)).returncode
        == 0
    )
    assert len(json.loads(out.read_text())) == 600  # 300 users x 2


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    res = run("evaluate", "--dataset", "sample", "--model", "popularty")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "did you mean popularity" in res.stderr
    res = run(
        "evaluate", "--dataset", "sample", "--model", "trending", "--param", "half_life_days=soon"
    )
    assert res.returncode == 2 and "must be a number" in res.stderr
    res = run("recommend", str(tmp_path / "nothing"), "--user", "1")
    assert res.returncode == 2 and "no such folder" in res.stderr
    assert "Traceback" not in res.stderr


def _textbook(train: pd.DataFrame, test: pd.DataFrame, k: int) -> dict[str, float]:
    """Popularity + textbook metrics, written independently of tastebud with plain Python."""
    counts = train.groupby("item")["user"].nunique()
    ranking = sorted(counts.index, key=lambda i: (-counts[i], i))
    seen = train.groupby("user")["item"].apply(set).to_dict()
    sums = dict.fromkeys(["Precision", "Recall", "NDCG", "MAP", "MRR", "HitRate"], 0.0)
    users = test.groupby("user")["item"].apply(set)
    for user, relevant in users.items():
        mine = seen.get(user, set())
        top = [i for i in ranking if i not in mine][:k]
        hits = [1 if i in relevant else 0 for i in top]
        n_rel = len(relevant)
        sums["Precision"] += sum(hits) / k
        sums["Recall"] += sum(hits) / n_rel
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(n_rel, k)))
        sums["NDCG"] += dcg / idcg
        ap, found = 0.0, 0
        for r, h in enumerate(hits):
            if h:
                found += 1
                ap += found / (r + 1)
        sums["MAP"] += ap / min(n_rel, k)
        sums["MRR"] += next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0)
        sums["HitRate"] += 1.0 if any(hits) else 0.0
    return {name: value / len(users) for name, value in sums.items()}


@pytest.mark.reference_data
def test_evaluate_popularity_equals_textbook_metrics_on_movielens(tmp_path):
    from conftest import require_reference

    folder = require_reference("ml-100k")
    data = pd.read_csv(folder / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"])
    rng = np.random.default_rng(123)
    is_test = rng.random(len(data)) < 0.2  # a plain global 80/20 split, not tastebud's
    train, test = data[~is_test], data[is_test]
    train.to_csv(tmp_path / "train.csv", index=False)  # with a header
    test.to_csv(tmp_path / "test.tsv", sep="\t", index=False, header=False)  # without
    res = run(
        "evaluate", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.tsv"),
        "--model", "popularity", "--k", "10", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    ours = json.loads(res.stdout)["results"]["popularity"]
    for name, value in _textbook(train, test, 10).items():
        assert ours[f"{name}@10"] == pytest.approx(value, abs=1e-6), name


def test_one_odd_id_in_the_test_file_does_not_change_the_other_ids(tmp_path):
    (tmp_path / "train.csv").write_text("user,item\n1,10\n1,20\n2,10\n3,30\n")
    (tmp_path / "plain.csv").write_text("user,item\n2,20\n")
    (tmp_path / "odd.csv").write_text("user,item\n2,20\nguest,new\n")
    results = []
    for test in ("plain.csv", "odd.csv"):
        res = run(
            "evaluate", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / test),
            "--model", "popularity", "--json", "--no-beyond", "--k", "2",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        results.append(json.loads(res.stdout)["results"]["popularity"])
    # user 2 saw item 10; popularity ranks 10 (2 users) > 20 = 30 -> list [20, 30]: hit at 1
    assert results[0]["MRR@2"] == 1.0
    # the guest (unknown) gets [10, 20]: no hit on "new"; user 2 is still matched and excluded
    assert results[1]["MRR@2"] == pytest.approx(0.5)
    res = run("evaluate", "--dataset", "sample", "--model", "popularity", "--k", "1", "--json")
    strict = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert strict["results"]["popularity"]["ILD@1"] is None  # undefined for 1-item lists


def test_output_paths_that_are_files_are_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run("fit", "--dataset", "sample", "--model", "popularity", "--out", str(blocker))
    assert res.returncode == 2 and "is a file" in res.stderr


@pytest.mark.slow
def test_import_loads_the_sample_once_and_refuses_a_bad_database(tmp_path):
    db = f"sqlite:///{tmp_path / 'shop.db'}"
    first = run("import", "--db", db, "--dataset", "sample")
    assert first.returncode == 0, first.stderr
    assert "300 users" in first.stdout and "60 items" in first.stdout
    again = run("import", "--db", db, "--dataset", "sample")
    assert again.returncode == 0 and "0 events" in again.stdout
    bad = run("import", "--db", "mysql://nowhere/x", "--dataset", "sample")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: setting db (--db): must be sqlite")
    assert len(bad.stderr.splitlines()) == 1
    wrong_type = run("import", "--db", db, "--dataset", "sample", "--event-type", "hug")
    assert wrong_type.returncode == 2 and "--event-type 'hug'" in wrong_type.stderr


def test_serve_answers_over_http_and_learns_from_a_like(tmp_path):
    """The README's walk-through: serve the sample, like something, see the list change."""
    import httpx

    from serving import sample_server

    with sample_server(tmp_path) as base:
        before = httpx.get(f"{base}/users/newcomer/recommendations?k=5").json()
        assert [r["source"] for r in before["items"]] == ["popular"] * 5
        liked = httpx.get(f"{base}/items", params={"limit": 1}).json()[0]["id"]
        posted = httpx.post(
            f"{base}/events", json={"user_id": "newcomer", "item_id": liked, "type": "like"}
        )
        assert posted.status_code == 201
        after = httpx.get(f"{base}/users/newcomer/recommendations?k=5&explain=true").json()
        assert after["items"] != before["items"]
        assert liked not in [r["item"] for r in after["items"]]
        assert after["items"][0]["source"] == "model"
        assert after["items"][0]["explanation"].startswith("because you liked ")


# -- the command line in the user's language (in-process: main() is the console script) -------
def _main(capsys, *args: str) -> tuple[int, str, str]:
    from tastebud.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version():
    from tastebud import __version__

    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"tastebud {__version__}"


def test_help_shows_flags_without_placeholders_and_lists_models_and_metrics(capsys):
    from tastebud.metrics.ranking import RANKING_METRICS
    from tastebud.models import available

    code, text, _ = _main(capsys, "evaluate", "--help")
    assert code == 0
    assert "<bool>" not in text and "list[str]" not in text
    flat = " ".join(text.split())
    assert "--json print JSON only" in flat and "--on-bad-rows <raise|skip>" in flat
    squashed = "".join(text.split())  # help wraps long lists, also at hyphens
    assert all(name in squashed for name in available())
    assert all(name in squashed for name in RANKING_METRICS)
    code, text, _ = _main(capsys, "recommend", "--help")
    assert "--include-seen also recommend" in " ".join(text.split()) and "<bool>" not in text


EVALUATE = ["evaluate", "--dataset", "sample", "-m", "popularity"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ([*EVALUATE, "--test-size", "2"], "--test-size"),
        ([*EVALUATE, "--test-size", "0"], "--test-size"),
        ([*EVALUATE, "--seed", "-1"], "--seed"),
        ([*EVALUATE, "--k", "0"], "--k"),
        ([*EVALUATE, "--split", "x"], "--split"),
        ([*EVALUATE, "--metric", "x"], "--metric"),
        ([*EVALUATE, "--on-bad-rows", "x"], "--on-bad-rows"),
        ([*EVALUATE, "--encoding", "klingon"], "--encoding"),
        ([*EVALUATE, "--relevance-threshold", "x"], "--relevance-threshold"),
        ([*EVALUATE, "--binarize", "9"], "--binarize"),
        ([*EVALUATE, "--fairness-by", "x"], "--fairness-by"),
        (["evaluate", "--dataset", "nope", "-m", "popularity"], "--dataset"),
        (["recommend", ".", "--user", "a", "--k", "-3"], "--k"),
        (["recommend", ".", "--users-file", "nowhere.txt"], "--users-file"),
        (["serve", "--port", "70000"], "--port"),
        (["experiments", "report", "x", "--alpha", "1.5"], "--alpha"),
        (["tune", "--dataset", "sample", "-m", "ease", "--trials", "0"], "--trials"),
        (["tune", "--dataset", "sample", "-m", "ease", "--sampler", "grid"], "--sampler"),
        ([*EVALUATE, "--track", "wandb"], "--track"),
    ],
)
def test_errors_name_the_flag_the_user_typed(capsys, tmp_path, monkeypatch, args, flag):
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no "Usage:"
    assert flag in err and "Traceback" not in err and "Value error" not in err
    assert "n_trials" not in err and "test_size" not in err and "on_bad_rows" not in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ([*EVALUATE, "--test-size", "2"], "error: --test-size: 2 is not strictly between 0 and 1"),
        ([*EVALUATE, "--split", "x"], "error: --split: 'x' is not one of 'random', "),
        (["tune", "-m", "ease", "--trials", "0"], "error: --trials: "),
        (["evaluate", "--dataset", "sample"], "error: missing option '--model'"),
        (["evaluate", "--k"], "error: option '--k' requires an argument"),
        (["experiments", "report"], "error: missing argument 'NAME'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_flag_and_the_help(capsys, args, line):
    code, out, err = _main(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith(line) and err.count("\n") == 1, err
    command = " ".join(a for a in args[:2] if not a.startswith("-") and a != "sample")
    assert err.endswith(f" (see tastebud {command} --help)\n"), err


def test_help_and_no_arguments_still_show_the_help(capsys):
    code, _, err = _main(capsys)
    assert code == 2 and "Commands:" in err and "evaluate" in err  # no arguments: the help
    code, out, _ = _main(capsys, "--help")
    assert code == 0 and "Commands:" in out
    code, out, _ = _main(capsys, "fit", "--help")
    assert code == 0 and "--model" in out


BAD_ROWS = "user,item,rating\n1,10,5\n1,20,3\n2,10,x\n2,30,4\n3,20,2,9\n3,30,1\n"


@pytest.mark.parametrize(
    ("args", "says", "not_says"),
    [
        (["--data", "bad.csv"], "bad.csv:4: column 'rating': 'x' is not a number", ""),
        (["--data", "bad.csv"], "--on-bad-rows skip skips", "on_bad_rows="),
        (["--data", "latin.csv"], "(e.g. --encoding latin-1)", "encoding="),
        (["--data", "good.csv", "--sep", ";"], "(pass --sep SEP)", "sep="),
        (["--data", "good.csv", "-m", "item-knn", "-p", "k=-5"], "--param k=-5: ", ""),
        (["--data", "good.csv", "-m", "item-knn:k=-5"], "--model item-knn:k=-5: ", ""),
        (["--data", "good.csv", "-m", "nosuch"], "--model nosuch: unknown model", ""),
    ],
)
def test_errors_name_flags_not_python_parameters(
    capsys, tmp_path, monkeypatch, args, says, not_says
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text(BAD_ROWS)
    (tmp_path / "good.csv").write_text(BAD_ROWS.replace("2,10,x", "2,10,4").replace(",9", ""))
    (tmp_path / "latin.csv").write_bytes("user,item\n1,caf\xe9\n".encode("latin-1"))
    model = [] if "-m" in args else ["-m", "popularity"]
    code, _, err = _main(capsys, "fit", *args, *model, "--out", "model")
    assert code == 2 and err.count("\n") == 1 and says in err, err
    assert not not_says or not_says not in err, err


def test_tune_names_its_own_flags_before_any_work(capsys):
    tune = ["tune", "--dataset", "sample"]
    code, _, err = _main(capsys, *tune, "-m", "popularity")
    assert code == 2 and err.startswith("error: --model popularity: tune has no search space")
    assert "ease" in err and "space=" not in err
    code, _, err = _main(capsys, *tune, "-m", "ease", "--metric", "foo")
    assert code == 2 and err.startswith("error: --metric foo: unknown metric; choose from")
    assert "rmse" in err  # tune also takes the rating metrics
    code, _, err = _main(capsys, *tune, "-m", "item-knn", "-p", "k=-5")
    assert code == 2 and err.startswith("error: --param k=-5: ItemKNN: k must be")


def test_evaluate_reports_say_which_data(capsys, tmp_path):
    code, _, err = _main(capsys, *EVALUATE, "--no-beyond", "--report", str(tmp_path / "rep"))
    assert code == 0, err
    payload = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert payload["title"] == "tastebud evaluation: music-store, random(0.2, seed=0)"
    assert payload["dataset"]["name"] == "music-store" and payload["dataset"]["users"] == 300
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Data" in report and "- interactions: 2565" in report
    assert "1 model compared" in report


def test_recommend_refuses_an_output_file_of_no_known_format(capsys, tmp_path):
    code, _, err = _main(capsys, "recommend", str(tmp_path), "-u", "1", "--out", "recs.txt")
    assert (
        code == 2
        and err == "error: --out recs.txt names no known format; give a file ending .csv or .json\n"
    )


def test_the_split_choices_are_the_library_splitters():
    import typing

    from tastebud.cli import evaluate
    from tastebud.split import SPLITTERS

    hint = typing.get_type_hints(evaluate, include_extras=True)["split"]
    assert typing.get_args(typing.get_args(hint)[0]) == tuple(SPLITTERS)


def test_an_unexpected_error_is_one_line_and_a_debug_switch_shows_it(capsys, monkeypatch):
    import tastebud.data.catalog as catalog

    def broken(name):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(catalog, "load_dataset", broken)
    monkeypatch.setattr("tastebud.cli.load_dataset", broken)
    code, _, err = _main(capsys, "fit", "--dataset", "sample", "-m", "popularity", "--out", "x")
    assert code == 1 and err.count("\n") == 1
    assert "unexpected RuntimeError: disk on fire second line" in err and "TASTEBUD_DEBUG" in err
    monkeypatch.setenv("TASTEBUD_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        _main(capsys, "fit", "--dataset", "sample", "-m", "popularity", "--out", "x")


def test_recommend_shows_titles_rounded_scores_and_the_models_id_types(capsys, tmp_path):
    from tastebud import Dataset
    from tastebud.models import create

    events = pd.DataFrame(
        {"user": [1, 1, 2, 2, 3, 3, 3], "item": [10, 20, 10, 30, 20, 30, 40],
         "weight": [1.0, 2.0, 3.0, 1.0, 2.0, 2.0, 1.0]}
    )  # fmt: skip
    items = pd.DataFrame(
        {"title": ["Kind of Blue", "Blue Train", "Giant [Steps]", None]},
        index=pd.Index([10, 20, 30, 40], name="item"),
    )
    ds = Dataset.from_frame(events, weight="weight", items=items)
    folder = create("item-knn").fit(ds).save(tmp_path / "knn")
    out = tmp_path / "recs.json"
    code, _, err = _main(
        capsys, "recommend", str(folder), "-u", "1", "-u", "3", "-u", "77", "--k", "3",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0 and "1 unknown user" in err
    rows = json.loads(out.read_text())
    assert {type(r["user"]) for r in rows} == {int}  # "1" typed on the command line is user 1
    assert {type(r["item"]) for r in rows} == {int}
    assert [r["user"] for r in rows[:1]] == [1] and rows[-1]["user"] == 77
    titles = {r["item"]: r["title"] for r in rows}
    assert titles[30] == "Giant [Steps]" and titles.get(40) is None
    assert all(float(f"{r['score']:.6g}") == r["score"] for r in rows)
    code, text, _ = _main(capsys, "recommend", str(folder), "-u", "1", "--k", "2")
    table = pd.read_csv(pd.io.common.StringIO(text))
    assert list(table.columns) == ["user", "item", "title", "score", "rank"]


def test_demo_names_the_models_it_leaves_out_and_how_to_add_them(monkeypatch):
    from tastebud.cli import _demo_models
    from tastebud.models import available, get_class

    torch_models = [n for n in available() if get_class(n).extra == "neural"]
    assert {"sasrec", "bert4rec", "ncf", "two-tower", "hybrid-bpr"} <= set(torch_models)
    for name in [*torch_models, "embedding"]:
        cls = get_class(name)
        monkeypatch.setattr(cls, "needs_modules", ("no_such_module_here",))
    models, line = _demo_models(None)
    assert set(models) == set(available()) - {*torch_models, "embedding"}
    assert "\n" not in line and line.startswith(f"skipped {len(torch_models) + 1} models:")
    assert "pip install 'tastebud[neural]'" in line and "pip install 'tastebud[embeddings]'" in line
    with pytest.raises(
        Exception, match=r"--model sasrec needs an extra: pip install 'tastebud\[neural\]'"
    ):
        _demo_models(["sasrec"])


def test_tune_prints_a_fit_command_that_fits_the_best_setting(capsys, tmp_path, monkeypatch):
    import shlex

    from tastebud.models import load

    monkeypatch.chdir(tmp_path)
    code, text, err = _main(
        capsys, "tune", "--dataset", "sample", "-m", "item-knn", "--trials", "4", "--binarize",
        "4", "-p", "similarity=jaccard", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(text)
    words = shlex.split(result["fit_command"])
    assert words[:2] == ["tastebud", "fit"] and "--binarize" in words
    code, _, err = _main(capsys, *words[1:])  # pasted as it is printed
    assert code == 0, err
    fitted = load(tmp_path / "model").get_params()
    for name, value in result["best_params"].items():
        assert fitted[name] == value, name
    assert fitted["similarity"] == "jaccard"
    code, text, _ = _main(capsys, "tune", "--dataset", "sample", "-m", "item-knn", "--trials", "2")
    assert code == 0 and "fit it: tastebud fit --model item-knn" in text
