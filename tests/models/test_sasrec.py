"""SASRec on data whose next item is known: items come in chains and users walk along them."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.errors import TastebudError
from tastebud.models import create, load
from tastebud.models.neural._torch import import_torch, time_ordered
from tastebud.models.neural.sasrec import SASRec, padded

pytestmark = pytest.mark.neural

SMALL = {"factors": 32, "epochs": 40, "learning_rate": 0.01, "patience": 0, "max_len": 10}
CHAINS, CHAIN_LEN = 3, 10  # items c0..c29: chain k is items 10k .. 10k+9, walked in order


def chains(n_users: int = 240, seed: int = 0) -> Dataset:
    """Each user walks 4-8 consecutive steps of one chain: the next item is always the
    following one on that chain -- a sequence model can know it, a bag of items cannot say
    which end of the walk the user is at."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        chain = u % CHAINS
        length = int(rng.integers(4, 9))
        start = int(rng.integers(0, CHAIN_LEN - length + 1))
        for step in range(length):
            rows.append((f"u{u}", f"c{chain * CHAIN_LEN + start + step}", 1_000 * u + step))
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return Dataset.from_frame(frame, timestamp="timestamp", name="chains")


@pytest.fixture(scope="module")
def fitted() -> SASRec:
    return SASRec(**SMALL).fit(chains())


def test_the_next_item_on_the_chain_comes_first(fitted):
    for walk, following in ((["c3", "c4", "c5"], "c6"), (["c11", "c12"], "c13"), (["c24"], "c25")):
        assert fitted.recommend_from_history(walk, k=1)["item"].iloc[0] == following


def test_the_order_of_the_history_decides(fitted):
    # the same two items, in the other order: a bag-of-items model gives both the same answer
    assert fitted.recommend_from_history(["c13", "c4"], k=1)["item"].iloc[0] == "c5"
    assert fitted.recommend_from_history(["c4", "c13"], k=1)["item"].iloc[0] == "c14"


def test_a_training_user_gets_the_step_after_their_last_item(fitted):
    data = chains()
    hits = 0
    users = data.users.ids[:60]
    for user in users:
        last = data.history(user)["item"].iloc[-1]
        position = int(last[1:])
        top = fitted.recommend(user, k=1)["item"].iloc[0]
        hits += position % CHAIN_LEN == CHAIN_LEN - 1 or top == f"c{position + 1}"
    assert hits >= 0.9 * len(users)


def test_early_stopping_keeps_the_best_epoch():
    model = SASRec(**{**SMALL, "epochs": 30, "patience": 3}).fit(chains())
    assert len(model.validation_ndcg_) <= 30
    best = int(np.argmax(model.validation_ndcg_))
    assert model.best_epoch_ == best
    assert len(model.validation_ndcg_) == 30 or len(model.validation_ndcg_) == best + 1 + 3
    assert model.validation_ndcg_[best] > 0.5  # the chains are learnable


def test_same_seed_same_model_and_save_load_round_trip(fitted, tmp_path):
    again = SASRec(**SMALL).fit(chains())
    users = ["u0", "u1", "u5", "nobody"]
    np.testing.assert_array_equal(again.score(users), fitted.score(users))
    loaded = load(fitted.save(tmp_path / "sasrec"))
    np.testing.assert_allclose(loaded.score(users), fitted.score(users), rtol=1e-6)
    pd.testing.assert_frame_equal(
        loaded.recommend_from_history(["c3", "c4"], k=3),
        fitted.recommend_from_history(["c3", "c4"], k=3),
    )


def test_sampled_softmax_learns_the_chains_too():
    model = SASRec(**SMALL, loss="sampled", negatives=8).fit(chains())
    assert model.recommend_from_history(["c3", "c4", "c5"], k=1)["item"].iloc[0] == "c6"


def test_sequences_are_time_ordered_and_left_padded():
    frame = pd.DataFrame(
        {"user": ["a", "a", "a", "b"], "item": ["x", "y", "z", "x"], "timestamp": [3, 1, 2, 5]}
    )
    data = Dataset.from_frame(frame, timestamp="timestamp")
    indptr, items = time_ordered(data)
    a = data.users.to_index(["a"])[0]
    ordered = data.items.to_ids(items[indptr[a] : indptr[a + 1]])
    assert list(ordered) == ["y", "z", "x"]
    assert padded([np.array([4, 5, 6]), np.array([])], 2).tolist() == [[6, 7], [0, 0]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"heads": 3}, "heads"),
        ({"max_len": 1}, "max_len"),
        ({"dropout": 1.0}, "dropout"),
        ({"loss": "bce"}, "loss"),
        ({"patience": -1}, "patience"),
        ({"device": "tpu:9"}, "device"),
    ],
)
def test_bad_parameters_are_clear_errors(params, message):
    with pytest.raises(TastebudError, match=message):
        create("sasrec", **params).fit(chains(30))


def test_without_torch_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(TastebudError, match=r"tastebud\[neural\]"):
        import_torch()


def test_auto_loss_is_the_full_softmax_on_small_catalogues_and_sampled_above(monkeypatch):
    """loss="auto" trains exactly as "softmax" up to FULL_SOFTMAX_MAX_ITEMS items and as
    "sampled" above (the same seed gives the same weights)."""
    from tastebud.models.neural import sasrec

    data = chains()
    quick = {**SMALL, "epochs": 2, "negatives": 8}

    def weights(model: SASRec) -> np.ndarray:
        return model.__dict__["weights/item.weight"]

    auto = weights(SASRec(**quick).fit(data))
    np.testing.assert_array_equal(auto, weights(SASRec(**quick, loss="softmax").fit(data)))
    monkeypatch.setattr(sasrec, "FULL_SOFTMAX_MAX_ITEMS", data.n_items - 1)
    auto = weights(SASRec(**quick).fit(data))
    np.testing.assert_array_equal(auto, weights(SASRec(**quick, loss="sampled").fit(data)))
