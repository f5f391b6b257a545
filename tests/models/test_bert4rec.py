"""BERT4Rec on the chain data of the SASRec tests: the next item of a walk is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_sasrec import chains

from tastebud.errors import TastebudError
from tastebud.models import create, load
from tastebud.models.neural.bert4rec import BERT4Rec

pytestmark = pytest.mark.neural

SMALL = {"factors": 32, "epochs": 60, "learning_rate": 0.01, "patience": 0, "max_len": 10}
SMALL |= {"mask_prob": 0.3}


@pytest.fixture(scope="module")
def fitted() -> BERT4Rec:
    return BERT4Rec(**SMALL).fit(chains())


def test_the_next_item_on_the_chain_comes_first(fitted):
    for walk, following in ((["c3", "c4", "c5"], "c6"), (["c11", "c12"], "c13"), (["c24"], "c25")):
        assert fitted.recommend_from_history(walk, k=1)["item"].iloc[0] == following


def test_the_order_of_the_history_decides(fitted):
    # a bag-of-items model gives both orders the same scores; walks never mix chains, so
    # which item comes next after a mixed history is not something training showed (SASRec's
    # test asks for it, BERT4Rec's bidirectional training does not settle it)
    first = fitted.recommend_from_history(["c13", "c4"], k=3)
    second = fitted.recommend_from_history(["c4", "c13"], k=3)
    assert first["item"].tolist() != second["item"].tolist()
    assert not np.allclose(first["score"], second["score"])


def test_a_training_user_gets_the_step_after_their_last_item(fitted):
    data = chains()
    hits = 0
    users = data.users.ids[:60]
    for user in users:
        position = int(data.history(user)["item"].iloc[-1][1:])
        top = fitted.recommend(user, k=1)["item"].iloc[0]
        hits += position % 10 == 9 or top == f"c{position + 1}"
    assert hits >= 0.9 * len(users)


def test_the_mask_token_is_no_item_and_attention_looks_both_ways(fitted):
    net = fitted._network()
    assert not net.causal
    assert net.item.num_embeddings == len(fitted.items_) + 2  # padding, items, mask
    assert fitted.score(["u0"]).shape == (1, len(fitted.items_))


def test_same_seed_same_model_and_save_load(fitted, tmp_path):
    again = BERT4Rec(**SMALL).fit(chains())
    users = ["u0", "u7", "nobody"]
    np.testing.assert_array_equal(again.score(users), fitted.score(users))
    loaded = load(fitted.save(tmp_path / "bert4rec"))
    assert isinstance(loaded, BERT4Rec) and loaded.mask_prob == SMALL["mask_prob"]
    pd.testing.assert_frame_equal(
        loaded.recommend_from_history(["c3", "c4"], k=3),
        fitted.recommend_from_history(["c3", "c4"], k=3),
    )


def test_early_stopping_keeps_the_best_epoch():
    model = BERT4Rec(**{**SMALL, "epochs": 30, "patience": 3}).fit(chains())
    best = int(np.argmax(model.validation_ndcg_))
    assert model.best_epoch_ == best
    assert model.validation_ndcg_[best] > 0.5


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_mask_prob_must_leave_something_to_see_and_to_predict(value):
    with pytest.raises(TastebudError, match="mask_prob"):
        create("bert4rec", mask_prob=value).fit(chains(30))
