"""The hybrid BPR network on block data with item and user metadata whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastebud import Dataset
from tastebud.errors import TastebudError
from tastebud.models import create, load
from tastebud.models.neural._torch import import_torch

pytestmark = pytest.mark.neural

SMALL = {"factors": 16, "meta_factors": 4, "layers": (32, 16), "epochs": 25}
SMALL |= {"batch_size": 64, "learning_rate": 0.003, "patience": 0}
N_USERS, N_ITEMS = 60, 24  # users 0-29 like items 0-11 (side "a"), the rest items 12-23 ("b")


def side(index: int, n: int) -> str:
    return "a" if index < n // 2 else "b"


def blocks(seed: int = 0, cold_items: tuple[int, ...] = ()) -> Dataset:
    """Checkerboard interactions in time order; users and items carry their side as an
    attribute; ``cold_items`` are in the catalog (with their side) but never interacted."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        own = [i for i in range(N_ITEMS) if side(i, N_ITEMS) == side(u, N_USERS)]
        for step, i in enumerate(rng.permutation(own)):
            if i not in cold_items and rng.random() < 0.7:
                rows.append((f"u{u}", f"i{i}", 100 * u + step))
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    users = pd.DataFrame(
        {"side": [side(u, N_USERS) for u in range(N_USERS)]},
        index=pd.Index([f"u{u}" for u in range(N_USERS)], name="user"),
    )
    items = pd.DataFrame(
        {"side": [side(i, N_ITEMS) for i in range(N_ITEMS)]},
        index=pd.Index([f"i{i}" for i in range(N_ITEMS)], name="item"),
    )
    return Dataset.from_frame(frame, timestamp="timestamp", users=users, items=items)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return blocks()


@pytest.fixture(scope="module")
def fitted(data):
    return create("hybrid-bpr", **SMALL).fit(data)


def share_on_own_side(model, data, k=2) -> float:
    inside = possible = 0
    for user in data.users.ids:
        mine = side(int(user[1:]), N_USERS)
        seen = set(data.history(user)["item"])
        unseen_own = [i for i in range(N_ITEMS) if side(i, N_ITEMS) == mine and f"i{i}" not in seen]
        top = model.recommend(user, k=k)["item"]
        inside += sum(side(int(item[1:]), N_ITEMS) == mine for item in top)
        possible += min(k, len(unseen_own))
    return inside / possible


def test_users_get_the_unseen_items_of_their_own_side(fitted, data):
    assert share_on_own_side(fitted, data) >= 0.9  # random: 0.5


def test_the_inference_path_is_the_training_network(fitted, data):
    """Scoring the whole catalog (split first layer) equals scoring each (user, item) pair
    with the training path."""
    torch = import_torch()
    net = fitted._network()
    users = torch.arange(6)
    histories = torch.randint(0, N_ITEMS + 1, (6, 5))
    with torch.no_grad():
        u = net.users(users, histories)
        every = net.score_all(u, net.items())
        pairs = net.pair(u.repeat_interleave(N_ITEMS, 0), net.items().repeat(6, 1))
    np.testing.assert_allclose(every.numpy(), pairs.reshape(6, N_ITEMS).numpy(), atol=1e-5)


def test_a_cold_item_is_ranked_by_its_metadata():
    cold = ("i3", "i15")  # one of each side, never interacted with
    data = blocks(cold_items=(3, 15))
    model = create("hybrid-bpr", **SMALL).fit(data)
    a_users = [f"u{u}" for u in range(N_USERS // 2)]
    b_users = [f"u{u}" for u in range(N_USERS // 2, N_USERS)]
    for item, own, other in ((cold[0], a_users, b_users), (cold[1], b_users, a_users)):
        own_scores = model.score(own, items=[item])[:, 0]
        other_scores = model.score(other, items=[item])[:, 0]
        assert own_scores.mean() > other_scores.max()


def test_an_anonymous_session_is_answered_from_its_items(fitted):
    for session, mine in ((["i1", "i4", "i7"], "a"), (["i13", "i20"], "b")):
        top = fitted.recommend_from_history(session, k=4)["item"]
        assert all(side(int(item[1:]), N_ITEMS) == mine for item in top)


def test_a_user_known_only_by_attributes_gets_their_side(data):
    train = data.subset(data.user_index != data.users.to_index(["u2"])[0])
    model = create("hybrid-bpr", **SMALL).fit(train)
    top = model.recommend("u2", k=5)["item"]
    assert all(side(int(item[1:]), N_ITEMS) == "a" for item in top)


def test_same_seed_same_model_and_save_load(fitted, data, tmp_path):
    again = create("hybrid-bpr", **SMALL).fit(data)
    users = ["u0", "u40", "nobody"]
    np.testing.assert_array_equal(again.score(users), fitted.score(users))
    loaded = load(fitted.save(tmp_path / "hybrid"))
    np.testing.assert_allclose(loaded.score(users), fitted.score(users), rtol=1e-5)
    pd.testing.assert_frame_equal(
        loaded.recommend_from_history(["i1", "i2"], k=3),
        fitted.recommend_from_history(["i1", "i2"], k=3),
    )


def test_early_stopping_keeps_the_best_epoch(data):
    model = create("hybrid-bpr", **{**SMALL, "epochs": 20, "patience": 2}).fit(data)
    best = int(np.argmax(model.validation_ndcg_))
    assert model.best_epoch_ == best
    assert len(model.validation_ndcg_) in (20, best + 3)


@pytest.mark.parametrize("params", [{"negatives": 4}, {"dropout": 0.1}, {"history_order": "any"}])
def test_negatives_dropout_and_set_histories_learn_the_blocks(params, data):
    model = create("hybrid-bpr", **{**SMALL, **params}).fit(data)
    assert share_on_own_side(model, data) >= 0.9


def test_dropout_is_off_when_scoring(data):
    model = create("hybrid-bpr", **SMALL, dropout=0.5).fit(data)
    np.testing.assert_array_equal(model.score(["u0", "u40"]), model.score(["u0", "u40"]))


def test_without_metadata_it_is_an_id_and_history_model(data):
    model = create("hybrid-bpr", **SMALL, use_user_features=False, use_item_features=False).fit(
        data
    )
    assert model.user_meta_width_ == 0 and model.item_meta_width_ == 0
    assert share_on_own_side(model, data) >= 0.9


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"layers": ()}, "layers"),
        ({"history_len": 0}, "history_len"),
        ({"id_dropout": 1.0}, "id_dropout"),
        ({"meta_factors": 0}, "meta_factors"),
        ({"negatives": 0}, "negatives"),
        ({"dropout": 1.0}, "dropout"),
        ({"history_order": "random"}, "history_order"),
    ],
)
def test_bad_parameters_are_clear_errors(params, message, data):
    with pytest.raises(TastebudError, match=message):
        create("hybrid-bpr", **params).fit(data)
