"""Damaged model folders: every kind of damage ends as one line and exit code 2 from
``tastebud recommend`` (or, where the damage cannot matter, a working model) -- never a
traceback. And the model card written beside every saved model."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.cli import main
from tastebud.data.sample import load_sample
from tastebud.errors import ModelFileError
from tastebud.models import create, load

# One model of each storage shape: plain arrays, a sparse similarity, factors, a rating
# model, a composite with member folders, item text, feature embeddings, torch weights.
NAMES = ["popularity", "item-knn", "als", "svd", "blend", "tfidf", "feature-mf", "sasrec"]


@pytest.fixture(scope="module")
def data():
    return load_sample(60)


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    params = {"sasrec": {"epochs": 2}, "blend": {"members": ("ease", "item-knn")}}
    return {
        name: create(name, **params.get(name, {})).fit(data).save(root / name) for name in NAMES
    }


def _truncate(fraction: float) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "arrays.npz"
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * fraction)])

    return damage


def _flip(fraction: float) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "arrays.npz"
        raw = bytearray(path.read_bytes())
        raw[int(len(raw) * fraction)] ^= 0xFF
        path.write_bytes(bytes(raw))

    return damage


def _config(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "config.json"
        config = json.loads(path.read_text())
        result = change(config)
        path.write_text(json.dumps(config if result is None else result))

    return damage


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def _remove(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


DAMAGE: dict[str, Callable[[Path], None]] = {
    "npz empty": _truncate(0.0),
    "npz cut at 10%": _truncate(0.1),
    "npz cut at half": _truncate(0.5),
    "npz cut at 99%": _truncate(0.99),
    "npz byte flipped early": _flip(0.02),
    "npz byte flipped mid": _flip(0.5),
    "npz byte flipped late": _flip(0.97),
    "npz missing": _remove("arrays.npz"),
    "config not json": _write("config.json", '{"format": "tastebud-model", '),
    "config a list": _write("config.json", "[1, 2, 3]"),
    "config without kinds": _config(lambda c: c.pop("kinds")),
    "config kinds a list": _config(lambda c: c.update(kinds=["x"])),
    "config with an unknown array": _config(lambda c: c["kinds"].update(ghost_="array")),
    "config with an unknown kind": _config(
        lambda c: c["kinds"].update({next(iter(c["kinds"])): "martian"})
    ),
    "config params a string": _config(lambda c: c.update(params="fast")),
    "config unknown parameter": _config(lambda c: c["params"].update(warp=9)),
    "config model unknown": _config(lambda c: c.update(model="no-such-model")),
    "config state emptied": _config(lambda c: c.update(state={})),
}


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0), capsys.readouterr().err


def _assert_one_line_exit_2(code: int, err: str, what: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, f"{what}: exit {code}\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {err}"
    assert "Traceback" not in err


@pytest.mark.parametrize("name", NAMES)
def test_every_kind_of_damage_is_one_line_and_exit_2(name, saved, tmp_path, capsys):
    for what, damage in DAMAGE.items():
        folder = tmp_path / what.replace(" ", "-")
        shutil.copytree(saved[name], folder)
        damage(folder)
        try:
            model = load(folder)
        except ModelFileError:
            code, err = _cli(capsys, "recommend", str(folder), "--user", "u001")
            _assert_one_line_exit_2(code, err, f"{name}, {what}")
            assert str(folder) in err, f"{name}, {what}: {err}"
        else:  # damage that touched nothing the model reads (a zip field no one checks)
            assert what.startswith("npz byte flipped"), f"{name}, {what}: loaded"
            users = ["u001", "u002", "nobody"]
            expected = load(saved[name]).recommend(users)
            assert model.recommend(users).equals(expected), f"{name}, {what}"


def _rewrite_arrays(folder: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    change(arrays)
    np.savez(folder / "arrays.npz", **arrays)


CUTS = (("shortened", lambda a: a[: max(len(a) - 1, 0)]), ("emptied", lambda a: a[:0]))


@pytest.mark.parametrize("name", NAMES)
def test_arrays_of_the_wrong_shape_never_escape_as_a_traceback(name, saved, tmp_path, capsys):
    """A valid zip whose arrays do not fit each other (one array shortened, or emptied):
    the load refuses it, or -- where that array plays no part in recommending -- the
    command works. Nothing else."""
    with np.load(saved[name] / "arrays.npz") as npz:
        keys = [k for k in npz.files if not k.startswith("weights/")]
        keys += [k for k in npz.files if k.startswith("weights/")][:3]  # each builds a network
    for key in keys:
        for how, cut in CUTS:
            folder = tmp_path / f"{key.replace('/', '-')}-{how}"
            shutil.copytree(saved[name], folder)
            _rewrite_arrays(
                folder, lambda arrays, key=key, cut=cut: arrays.update({key: cut(arrays[key])})
            )
            code, err = _cli(capsys, "recommend", str(folder), "--user", "u001", "--k", "3")
            if code != 0:
                _assert_one_line_exit_2(code, err, f"{name}: {key} {how}")


def test_a_folder_that_does_not_exist_says_so(tmp_path, capsys):
    code, err = _cli(capsys, "recommend", str(tmp_path / "nowhere"), "--user", "u001")
    _assert_one_line_exit_2(code, err, "missing folder")
    assert "no such folder" in err
    (tmp_path / "file").write_text("x")
    code, err = _cli(capsys, "recommend", str(tmp_path / "file"), "--user", "u001")
    _assert_one_line_exit_2(code, err, "a file")
    code, err = _cli(capsys, "recommend", str(tmp_path), "--user", "u001")
    _assert_one_line_exit_2(code, err, "a folder without a model")
    assert "no config.json" in err


def test_a_zip_with_a_pickled_array_is_refused(saved, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(saved["popularity"], folder)
    with zipfile.ZipFile(folder / "arrays.npz", "a") as zf, zf.open("evil.npy", "w") as f:
        np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFileError):
        load(folder)


def test_model_card_says_what_the_model_is(saved, data):
    card = (saved["als"] / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: als")
    assert f"users: {data.n_users}" in card and f"interactions: {data.n_interactions}" in card
    assert "time span:" in card and "rating range: 1, 5" in card
    assert "| n_factors | 64 |" in card
    assert "validation NDCG@10 at the chosen reg" in card  # reg="auto" chose on a holdout
    sasrec = (saved["sasrec"] / "MODEL_CARD.md").read_text()
    assert "best epoch:" in sasrec and "epochs trained: 2" in sasrec
    popularity = (saved["popularity"] / "MODEL_CARD.md").read_text()
    assert "chooses nothing on validation data" in popularity
    assert load(saved["als"]).model_card() == card


def test_every_model_card_says_in_plain_words_what_the_model_is():
    """The card's first line is the class docstring's summary, with no docstring plumbing
    ("(module docstring)", Sphinx roles, a literal block's "::") leaking into it."""
    from tastebud.models import available
    from tastebud.models._card import model_card

    for name in available():
        described = model_card(create(name)).splitlines()[2]
        assert described.endswith(".") and len(described) > 20, name
        for plumbing in ("docstring", "::", ":class:", "``", "  "):
            assert plumbing not in described, (name, described)


def test_titles_travel_with_the_model(tmp_path):
    events = pd.DataFrame({"user": [1, 1, 2, 3], "item": [10, 20, 10, 30]})
    titles = pd.DataFrame(
        {"title": ["Kind of Blue", "Blue [Live | 1971]", None]},
        index=pd.Index([10, 20, 30], name="item"),
    )
    ds = Dataset.from_frame(events, items=titles)
    model = load(create("popularity").fit(ds).save(tmp_path / "m"))
    assert model.item_titles([20, 10, 30, 99]) == ["Blue [Live | 1971]", "Kind of Blue", None, None]
