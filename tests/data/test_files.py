"""Reading interaction files: happy paths, and every bad input ending in a located DataError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tastebud.data.files import read_interactions
from tastebud.data.validate import SkippedRowsWarning
from tastebud.errors import DataError

TASTEBUD = Path(sys.executable).parent / "tastebud"


def write(folder: Path, name: str, text: str | bytes) -> Path:
    """A file with exactly these bytes (no newline translation)."""
    path = folder / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def load_error(path: Path, **kwargs: object) -> DataError:
    with pytest.raises(DataError) as info:
        read_interactions(path, **kwargs)
    return info.value


def rows(ds) -> list[tuple]:
    """Interactions as plain tuples, sorted by (user, item)."""
    return [tuple(r) for r in ds.interactions.itertuples(index=False)]


# -- happy paths -----------------------------------------------------------------------------
def test_csv_with_movielens_header_infers_roles(tmp_path):
    path = write(
        tmp_path,
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,3.5,200\n2,10,5,300\n",
    )
    ds = read_interactions(path)
    assert (ds.n_users, ds.n_items, len(ds)) == (2, 2, 3)
    assert ds.has_ratings and ds.has_timestamps and ds.weight is None
    assert ds.name == "ratings"
    assert ds.skipped == {}
    assert rows(ds) == [(1, 10, 4.0, 100.0), (1, 20, 3.5, 200.0), (2, 10, 5.0, 300.0)]


def test_tsv_without_header_is_read_in_u_data_order(tmp_path):
    path = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    ds = read_interactions(path)
    assert rows(ds) == [(186, 302, 3.0, 891717742.0), (196, 242, 3.0, 881250949.0)]


@pytest.mark.parametrize(("sep", "name"), [(";", "semi.csv"), ("|", "pipe.txt")])
def test_semicolon_and_pipe_separators_are_sniffed(tmp_path, sep, name):
    text = "\n".join(sep.join(r) for r in [["user", "item", "rating"], ["1", "10", "4"]])
    path = write(tmp_path, name, text + "\n" + sep.join(["2", "20", "3"]) + "\n")
    assert rows(read_interactions(path)) == [(1, 10, 4.0), (2, 20, 3.0)]


def test_double_colon_separator_of_ml_1m(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    ds = read_interactions(path)
    assert rows(ds) == [(1, 661, 3.0, 978302109.0), (1, 1193, 5.0, 978300760.0)]


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path, "crlf.csv", "user,item,rating\r\n1,10,4\r\n2,20,3\r\n")
    assert rows(read_interactions(path)) == [(1, 10, 4.0), (2, 20, 3.0)]
    bad = write(tmp_path, "crlf_bad.csv", "user,item,rating\r\n1,10,4\r\n\r\n2,20,x\r\n")
    assert str(load_error(bad)) == f"{bad}:4: column 'rating': 'x' is not a number"


def test_parquet_file(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "userId": ["ann", "bob", "ann"],
            "itemId": [10, 20, 30],
            "rating": [4.0, 3.0, 5.0],
            "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"]),
        }
    ).to_parquet(path)
    ds = read_interactions(path)
    assert rows(ds) == [
        ("ann", 10, 4.0, 1577836800.0),
        ("ann", 30, 5.0, 1578009600.0),
        ("bob", 20, 3.0, 1577923200.0),
    ]


def test_parquet_bad_value_names_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"user": [1, 2], "item": [10, 20], "rating": [4.0, None]}).to_parquet(path)
    assert str(load_error(path)) == f"{path} row 1: column 'rating': missing value"


def test_string_ids_are_kept_as_text(tmp_path):
    path = write(tmp_path, "s.csv", "user,item\nann,x1\nbob,x2\nann,x2\n")
    ds = read_interactions(path)
    assert ds.users.ids.tolist() == ["ann", "bob"]
    assert ds.items.ids.tolist() == ["x1", "x2"]
    assert rows(ds) == [("ann", "x1"), ("ann", "x2"), ("bob", "x2")]


def test_explicit_column_mapping(tmp_path):
    path = write(tmp_path, "m.csv", "who,what,stars,note\n1,10,4,a\n2,20,3,b\n")
    ds = read_interactions(path, user="who", item="what", rating="stars")
    assert rows(ds) == [(1, 10, 4.0), (2, 20, 3.0)]


def test_explicit_mapping_to_a_missing_column_lists_the_columns(tmp_path):
    path = write(tmp_path, "m.csv", "who,what\n1,10\n")
    err = load_error(path, user="whom", item="what")
    assert str(err) == f"{path}: missing column(s) 'whom'; columns found: [who, what]"


def test_rating_false_ignores_an_inferred_rating_column(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,10,4\n2,20,oops\n")
    ds = read_interactions(path, rating=False)  # the bad rating is not even looked at
    assert ds.rating is None
    assert rows(ds) == [(1, 10), (2, 20)]


def test_weight_column_plays(tmp_path):
    path = write(tmp_path, "p.csv", "user,artist,plays\n2,51,13883\n2,52,11690\n3,51,7\n")
    ds = read_interactions(path)
    assert ds.rating is None
    assert rows(ds) == [(2, 51, 13883.0), (2, 52, 11690.0), (3, 51, 7.0)]
    assert ds.matrix().toarray().tolist() == [[13883.0, 11690.0], [7.0, 0.0]]


def test_iso_dates_are_timestamps(tmp_path):
    path = write(tmp_path, "d.csv", "user,item,date\n1,10,2020-01-01\n2,20,2020-01-02T00:00:10Z\n")
    ds = read_interactions(path)
    assert ds.timestamp.tolist() == [1577836800.0, 1577923210.0]


def test_blank_lines_are_not_rows_and_keep_line_numbers(tmp_path):
    text = "user,item,rating\n1,10,4\n\n2,20,3\n   \n\n3,30,abc\n"
    path = write(tmp_path, "b.csv", text)
    err = load_error(path)
    assert str(err) == f"{path}:7: column 'rating': 'abc' is not a number"
    assert (err.source, err.line, err.column) == (str(path), 7, "rating")
    good = write(tmp_path, "g.csv", "user,item,rating\n1,10,4\n\n2,20,3\n\n")
    assert len(read_interactions(good)) == 2


def test_blank_lines_in_a_double_colon_file(tmp_path):
    good = write(tmp_path, "g.dat", "1::10::4::100\n\n2::20::3::200\n")
    assert rows(read_interactions(good)) == [(1, 10, 4.0, 100.0), (2, 20, 3.0, 200.0)]
    path = write(tmp_path, "b.dat", "1::10::4::100\n\n2::20::x::200\n")
    err = load_error(path)
    assert str(err) == f"{path}:3: column 'rating': 'x' is not a number"


def test_utf8_bom_before_the_header_is_not_part_of_the_first_name(tmp_path):
    # What spreadsheet programs write for "CSV UTF-8".
    path = write(tmp_path, "bom.csv", "\ufeffuserId,movieId,rating\n1,10,4\n2,20,3\n")
    assert rows(read_interactions(path)) == [(1, 10, 4.0), (2, 20, 3.0)]


# -- errors ----------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    assert str(load_error(path)) == f"{path}: no such file"


def test_empty_file(tmp_path):
    path = write(tmp_path, "e.csv", "")
    assert str(load_error(path)) == f"{path}: the file is empty"


def test_header_only(tmp_path):
    path = write(tmp_path, "h.csv", "user,item,rating\n")
    assert str(load_error(path)) == f"{path}: the file has no rows"


def test_row_with_too_many_fields(tmp_path):
    path = write(tmp_path, "m.csv", "user,item,rating\n1,10,4\n\n2,20,3,9\n3,30,3\n")
    err = load_error(path)
    assert err.line == 4
    assert str(err).startswith(f"{path}:4: has 4 fields, expected 3 (separator ',';")


def test_row_with_too_many_fields_double_colon(tmp_path):
    path = write(tmp_path, "m.dat", "1::10::4::100\n2::20::3::200::7\n")
    err = load_error(path)
    assert str(err).startswith(f"{path}:2: has 5 fields, expected 4 (separator '::';")


def test_the_first_bad_line_is_reported_whatever_its_problem(tmp_path):
    """pandas stops at a line with too many fields; a bad value above it comes first."""
    text = "user,item,rating\n1,10,5\n1,20,3\n2,10,x\n2,30,4\n3,20,2,9\n3,30,1\n"
    err = load_error(write(tmp_path, "bad.csv", text))
    assert err.line == 4 and err.column == "rating"
    assert "'x' is not a number; also line 6: has 4 fields, expected 3" in str(err)
    later = text.replace("2,10,x", "2,10,4").replace("3,30,1", "3,30,x")
    err = load_error(write(tmp_path, "later.csv", later))
    assert err.line == 6 and "has 4 fields" in str(err)  # the value error comes after it


def test_row_with_too_few_fields_is_a_missing_value(tmp_path):
    path = write(tmp_path, "f.csv", "user,item,rating\n1,10,4\n2,20\n3,30,3\n")
    assert str(load_error(path)) == f"{path}:3: column 'rating': missing value"


def test_non_numeric_rating(tmp_path):
    path = write(tmp_path, "a.csv", "user,item,rating\n1,10,4\n2,20,3\n3,30,abc\n")
    err = load_error(path)
    assert str(err) == f"{path}:4: column 'rating': 'abc' is not a number"
    assert (err.line, err.column, err.problem) == (4, "rating", "'abc' is not a number")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nan", "'nan' is not a number"),
        ("NaN", "'NaN' is not a number"),
        ("inf", "inf is not finite"),
        ("-inf", "-inf is not finite"),
    ],
)
def test_nan_and_inf_ratings(tmp_path, value, problem):
    path = write(tmp_path, "n.csv", f"user,item,rating\n1,10,4\n2,20,{value}\n")
    assert str(load_error(path)) == f"{path}:3: column 'rating': {problem}"


def test_rating_outside_range(tmp_path):
    path = write(tmp_path, "r.csv", "user,item,rating\n1,10,4\n2,20,6\n3,30,0.5\n")
    err = load_error(path, rating_range=(1, 5))
    assert str(err) == (
        f"{path}:3: column 'rating': 6 is outside the rating range [1, 5] "
        "(2 bad rows in all; on_bad_rows='skip' skips and counts them)"
    )


def test_negative_weight(tmp_path):
    path = write(tmp_path, "w.csv", "user,item,plays\n1,10,4\n2,20,-3\n")
    assert str(load_error(path)) == f"{path}:3: column 'plays': -3 is negative"


def test_unparseable_timestamp(tmp_path):
    path = write(tmp_path, "t.csv", "user,item,timestamp\n1,10,100\n2,20,yesterday-ish\n")
    assert str(load_error(path)) == (
        f"{path}:3: column 'timestamp': 'yesterday-ish' is neither unix seconds nor a date/time"
    )


def test_missing_user_id(tmp_path):
    path = write(tmp_path, "u.csv", "user,item,rating\n1,10,4\n ,20,3\n")
    assert str(load_error(path)) == f"{path}:3: column 'user': missing id"


def test_row_of_empty_fields_is_not_silently_dropped(tmp_path):
    # ",," is a row whose ids are missing, not a blank line.
    path = write(tmp_path, "c.csv", "user,item,rating\n1,10,4\n,,\n3,30,3\n")
    assert str(load_error(path)) == f"{path}:3: column 'user': missing id"


def test_wrong_separator_says_one_column(tmp_path):
    path = write(tmp_path, "u.tsv", "1\t10\t4\n2\t20\t3\n")
    err = load_error(path, sep=",")
    assert err.line == 1
    assert str(err).startswith(f"{path}:1: found 1 column with separator ','")
    assert "is the separator right? (pass sep=...)" in str(err)


def test_latin1_file_read_as_utf8_names_line_and_encoding(tmp_path):
    data = b"user,item,rating\n1,10,4\n2,20,3\n" + "caf\xe9,30,4\n".encode("latin-1")
    path = write(tmp_path, "l.csv", data)
    err = load_error(path)
    assert err.line == 4
    assert str(err) == (
        f"{path}:4: bytes b'\\xe9,30' are not valid utf-8; "
        "pass the file's encoding (e.g. encoding='latin-1')"
    )
    ds = read_interactions(path, encoding="latin-1")
    assert ds.users.ids.tolist() == ["1", "2", "café"]


def test_latin1_byte_after_the_sniffed_lines(tmp_path):
    head = "user,item,rating\n" + "".join(f"{i},{i},3\n" for i in range(1, 60))
    path = write(tmp_path, "l.csv", head.encode() + "99,caf\xe9,4\n".encode("latin-1"))
    err = load_error(path)
    assert err.line == 61
    assert "encoding='latin-1'" in str(err)


def test_no_recognizable_user_column_lists_columns(tmp_path):
    path = write(tmp_path, "x.csv", "who,item,rating\n1,10,4\n")
    err = load_error(path)
    assert str(err).startswith(
        f"{path}: cannot tell which column holds the user ids among [who, item, rating]; "
    )
    assert "user=" in str(err)  # says how to name it


def test_duplicates_error_names_both_lines(tmp_path):
    path = write(tmp_path, "d.csv", "user,item,rating\n1,10,4\n2,20,3\n1,10,5\n")
    assert str(load_error(path, duplicates="error")) == (
        f"{path}: repeated (user, item) pair at lines 2 and 4; "
        "choose duplicates='last', 'sum', 'max' or 'first'"
    )


# -- skip mode -------------------------------------------------------------------------------
SKIP_TEXT = (
    "user,item,rating\n"  # 1
    "1,10,4\n"  # 2
    "2,20,abc\n"  # 3 not a number
    "3,30,5\n"  # 4
    ",40,3\n"  # 5 missing user id
    "5,50,x\n"  # 6 not a number
    "6,60,2\n"  # 7
)


def test_skip_mode_counts_bad_rows_by_reason(tmp_path):
    path = write(tmp_path, "s.csv", SKIP_TEXT)
    err = load_error(path)  # the default stops at the first and counts the others
    assert str(err) == (
        f"{path}:3: column 'rating': 'abc' is not a number "
        "(3 bad rows in all; on_bad_rows='skip' skips and counts them)"
    )
    with pytest.warns(SkippedRowsWarning) as record:
        ds = read_interactions(path, on_bad_rows="skip")
    assert [str(w.message) for w in record] == [
        f"{path}: skipped 3 of 6 rows (2 with column 'rating': not a number; "
        "1 with column 'user': missing id)"
    ]
    assert len(ds) == 3
    assert rows(ds) == [(1, 10, 4.0), (3, 30, 5.0), (6, 60, 2.0)]
    assert ds.skipped == {"column 'rating': not a number": 2, "column 'user': missing id": 1}
    assert sum(ds.skipped.values()) == 3
    assert ds.describe()["skipped_rows"] == ds.skipped


def test_skip_mode_counts_rows_with_too_many_fields(tmp_path):
    text = "user,item,rating\n1,10,4\n\n2,20,3,9\n3,30,abc\n4,40,3,3\n5,50,5\n"
    path = write(tmp_path, "s.csv", text)
    with pytest.warns(SkippedRowsWarning) as record:
        ds = read_interactions(path, on_bad_rows="skip")
    messages = [str(w.message) for w in record]
    assert f"{path}: skipped 2 lines with more than 3 fields (first at line 4)" in messages
    assert f"{path}: skipped 1 of 3 rows (1 with column 'rating': not a number)" in messages
    assert rows(ds) == [(1, 10, 4.0), (5, 50, 5.0)]
    assert ds.skipped == {"too many fields": 2, "column 'rating': not a number": 1}


def test_skip_mode_too_many_fields_double_colon(tmp_path):
    text = "1::10::4::100\n2::20::3::200::7\n3::30::3::300\n4::40::5::400::1\n"
    path = write(tmp_path, "s.dat", text)
    with pytest.warns(SkippedRowsWarning, match="skipped 2 lines with more than 4 fields"):
        ds = read_interactions(path, on_bad_rows="skip")
    assert rows(ds) == [(1, 10, 4.0, 100.0), (3, 30, 3.0, 300.0)]
    assert ds.skipped == {"too many fields": 2}
    one = write(tmp_path, "one.dat", text.replace("::1\n", "\n"))
    with pytest.warns(
        SkippedRowsWarning, match=r"skipped 1 line with more than 4 fields \(line 2\)"
    ):
        read_interactions(one, on_bad_rows="skip")


def test_skip_mode_all_rows_bad_is_an_error(tmp_path):
    path = write(tmp_path, "s.csv", "user,item,rating\n1,10,a\n2,20,b\n")
    with pytest.warns(SkippedRowsWarning), pytest.raises(DataError) as info:
        read_interactions(path, on_bad_rows="skip")
    assert str(info.value) == (
        f"{path}: every one of the 2 rows is bad (2 with column 'rating': not a number)"
    )


# -- repeated (user, item) pairs -------------------------------------------------------------
# user 1 / item 10 three times; the latest event (t=300) is not the last line.
RATED = "user,item,rating,timestamp\n1,10,4,300\n1,10,2,100\n1,10,5,200\n2,20,3,50\n"
PLAYED = "user,item,plays,timestamp\n1,10,4,300\n1,10,2,100\n1,10,5,200\n2,20,3,50\n"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, (1, 10, 4.0, 300.0)),  # "last" by timestamp is the default with ratings
        ("last", (1, 10, 4.0, 300.0)),
        ("first", (1, 10, 2.0, 100.0)),
        ("max", (1, 10, 5.0, 300.0)),
    ],
)
def test_duplicate_ratings(tmp_path, policy, expected):
    ds = read_interactions(write(tmp_path, "r.csv", RATED), duplicates=policy)
    assert rows(ds) == [expected, (2, 20, 3.0, 50.0)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, (1, 10, 11.0, 300.0)),  # "sum" is the default without ratings
        ("sum", (1, 10, 11.0, 300.0)),
        ("last", (1, 10, 4.0, 300.0)),
        ("first", (1, 10, 2.0, 100.0)),
        ("max", (1, 10, 5.0, 300.0)),
    ],
)
def test_duplicate_weights(tmp_path, policy, expected):
    ds = read_interactions(write(tmp_path, "p.csv", PLAYED), duplicates=policy)
    assert ds.rating is None
    assert rows(ds) == [expected, (2, 20, 3.0, 50.0)]


# -- command line ----------------------------------------------------------------------------
def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [str(TASTEBUD), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def cli_files(tmp_path) -> tuple[Path, Path]:
    bad = write(tmp_path, "bad.csv", "user,item,rating\n1,10,4\n2,20,3\n3,30,abc\n")
    good = write(tmp_path, "good.csv", "user,item,rating\n1,20,4\n2,10,3\n")
    return bad, good


def test_cli_bad_training_file_is_one_error_line(cli_files):
    bad, good = cli_files
    args = ["evaluate", "--train", bad.name, "--test", good.name, "--model", "popularity"]
    proc = run_cli(args, cwd=bad.parent)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: bad.csv:4: column 'rating': 'abc' is not a number"
    ]


def test_cli_error_with_a_long_path_stays_on_one_line(cli_files):
    bad, good = cli_files
    args = ["evaluate", "--train", str(bad), "--test", str(good), "--model", "popularity"]
    proc = run_cli(args, cwd=bad.parent)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}:4: column 'rating': 'abc' is not a number"
    ]


def test_cli_unknown_model_suggests_close_names(cli_files):
    bad, good = cli_files
    args = ["evaluate", "--train", good.name, "--test", good.name, "--model", "populrity"]
    proc = run_cli(args, cwd=bad.parent)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "error: --model populrity: unknown model 'populrity'; did you mean popularity?"
    )


def test_unknown_encoding_name_is_a_clear_error(tmp_path):
    path = write(tmp_path, "e.csv", "user,item\n1,2\n")
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        read_interactions(path, encoding="klingon")


def test_quoted_header_as_written_by_r(tmp_path):
    path = write(tmp_path, "r.csv", '"","user_id","item_id"\n"1",1,10\n"2",2,20\n')
    assert rows(read_interactions(path)) == [(1, 10), (2, 20)]


def test_all_text_file_with_named_columns_uses_the_header(tmp_path):
    path = write(tmp_path, "t.csv", "customer_name,product_name\nalice,apple\nbob,pear\n")
    ds = read_interactions(path, user="customer_name", item="product_name")
    assert rows(ds) == [("alice", "apple"), ("bob", "pear")]


def test_repeated_header_names_are_refused(tmp_path):
    path = write(tmp_path, "d.csv", "user,item,rating,rating\n1,2,3,4\n")
    with pytest.raises(DataError, match="appear more than once"):
        read_interactions(path)


def test_compressed_files_and_spaces_after_separators(tmp_path):
    import gzip

    path = tmp_path / "c.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("user, item\n1, 10\n2, 20\n")
    assert rows(read_interactions(path)) == [(1, 10), (2, 20)]
