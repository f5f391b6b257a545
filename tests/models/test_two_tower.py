"""Two-tower retrieval on the side-by-side block data of the hybrid BPR tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_hybrid_bpr import N_ITEMS, N_USERS, blocks, share_on_own_side, side

from tastebud import Dataset
from tastebud.ann import faiss_or_none
from tastebud.errors import TastebudError
from tastebud.models import create, load

pytestmark = pytest.mark.neural

SMALL = {"factors": 16, "meta_factors": 4, "layers": (32,), "epochs": 25}
SMALL |= {"batch_size": 64, "learning_rate": 0.003, "patience": 0}


@pytest.fixture(scope="module")
def data():
    return blocks()


@pytest.fixture(scope="module")
def fitted(data):
    return create("two-tower", **SMALL).fit(data)


def test_users_get_the_unseen_items_of_their_own_side(fitted, data):
    assert share_on_own_side(fitted, data) >= 0.9  # random: 0.5


@pytest.mark.skipif(faiss_or_none() is None, reason="faiss is not installed")
def test_the_ann_index_gives_the_exact_answers_on_a_small_catalog(fitted, data, tmp_path):
    ann = load(fitted.save(tmp_path / "tt")).set_params(index="ann")
    assert ann.vector_index().backend == "faiss"
    assert fitted.vector_index().backend == "exact"  # "auto" below ann_min_items
    users = [*data.users.ids[:10].tolist(), "nobody"]
    exact = fitted.recommend(users, k=5)
    approximate = ann.recommend(users, k=5)
    pd.testing.assert_frame_equal(exact, approximate, check_exact=False, rtol=1e-4)
    assert not set(approximate.query("user == 'u0'")["item"]) & set(data.history("u0")["item"])
    pd.testing.assert_frame_equal(
        fitted.similar_items(["i1", "i20"], k=4),
        ann.similar_items(["i1", "i20"], k=4),
        check_exact=False,
        rtol=1e-4,
    )


def test_similar_items_stay_on_their_side(fitted):
    similar = fitted.similar_items(["i2", "i17"], k=5)
    for item, group in similar.groupby("item"):
        mine = side(int(item[1:]), N_ITEMS)
        assert all(side(int(s[1:]), N_ITEMS) == mine for s in group["similar"])


def test_a_cold_item_is_placed_by_its_metadata():
    data = blocks(cold_items=(3, 15))
    model = create("two-tower", **SMALL).fit(data)
    a_users = [f"u{u}" for u in range(N_USERS // 2)]
    b_users = [f"u{u}" for u in range(N_USERS // 2, N_USERS)]
    for item, own, other in (("i3", a_users, b_users), ("i15", b_users, a_users)):
        assert (
            model.score(own, items=[item])[:, 0].mean()
            > model.score(other, items=[item])[:, 0].max()
        )


def test_an_anonymous_session_is_answered_from_its_items(fitted):
    for session, mine in ((["i1", "i4", "i7"], "a"), (["i13", "i20"], "b")):
        top = fitted.recommend_from_history(session, k=4)["item"]
        assert all(side(int(item[1:]), N_ITEMS) == mine for item in top)


@pytest.mark.parametrize(
    "params",
    [
        {"loss": "softmax"},
        {"loss": "sampled", "negatives": 8},
        {"loss": "auto", "negatives": 8},  # in-batch: the catalogue is larger than 8
        {"loss": "in-batch"},
        {"history_order": "any"},
    ],
)
def test_every_loss_and_history_order_learns_the_blocks(params, data):
    model = create("two-tower", **{**SMALL, **params}).fit(data)
    assert share_on_own_side(model, data) >= 0.9
    if params.get("loss") == "auto":
        assert model.training_loss_ == "in-batch"  # 24 items, more than 8 negatives


def test_auto_loss_is_the_full_softmax_on_a_catalogue_no_larger_than_the_sample(fitted):
    assert fitted.training_loss_ == "softmax"


def test_the_logq_correction_gives_popular_items_back_their_share():
    """Items 0-3 are in nearly every history, so in-batch negatives over-sample them: without
    the correction they are pushed down against the rest; with it, much less."""
    rng = np.random.default_rng(5)
    rows = []
    for u in range(80):
        popular = [i for i in range(4) if rng.random() < 0.9]
        items = [*popular, *rng.choice(np.arange(4, 40), 6, replace=False)]
        rows += [(f"u{u}", f"i{i}", step) for step, i in enumerate(rng.permutation(items))]
    ds = Dataset.from_frame(
        pd.DataFrame(rows, columns=["user", "item", "timestamp"]), timestamp="timestamp"
    )

    def popular_margin(model) -> float:
        scores = model.score(ds.users.ids) * model.temperature  # cosines
        columns = ds.items.to_index([f"i{i}" for i in range(4)])
        rest = np.setdiff1d(np.arange(ds.n_items), columns)
        return float(scores[:, columns].mean() - scores[:, rest].mean())

    with_logq = create("two-tower", **SMALL, loss="in-batch").fit(ds)
    without = create("two-tower", **SMALL, loss="in-batch", logq=False).fit(ds)
    # measured: 0.040 with the correction, -0.0004 without
    assert popular_margin(with_logq) > popular_margin(without) + 0.02


def test_same_seed_same_model_and_save_load(fitted, data, tmp_path):
    again = create("two-tower", **SMALL).fit(data)
    users = ["u0", "u40", "nobody"]
    np.testing.assert_array_equal(again.score(users), fitted.score(users))
    loaded = load(fitted.save(tmp_path / "tt"))
    np.testing.assert_allclose(loaded.score(users), fitted.score(users), rtol=1e-5)
    np.testing.assert_array_equal(loaded.item_vectors_, fitted.item_vectors_)


@pytest.mark.slow
def test_the_item_tower_reads_text_embeddings():
    data = blocks()
    titles = pd.DataFrame(
        {
            "side": [side(i, N_ITEMS) for i in range(N_ITEMS)],
            "title": [
                f"{'space opera' if side(i, N_ITEMS) == 'a' else 'cooking show'} {i}"
                for i in range(N_ITEMS)
            ],
        },
        index=pd.Index([f"i{i}" for i in range(N_ITEMS)], name="item"),
    )
    with_text = Dataset.from_frame(
        data.interactions, timestamp="timestamp", users=data.user_features, items=titles
    )
    model = create("two-tower", **SMALL, text="minilm", text_fields=("title",)).fit(with_text)
    assert model.item_text_width_ == 384
    assert share_on_own_side(model, with_text) >= 0.9


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"layers": (0,)}, "layers"),
        ({"index": "annoy"}, "index"),
        ({"text": "bert"}, "text"),
        ({"id_dropout": 1.0}, "id_dropout"),
        ({"negatives": 0}, "negatives"),
        ({"loss": "bpr"}, "loss"),
        ({"history_order": "random"}, "history_order"),
    ],
)
def test_bad_parameters_are_clear_errors(params, message, data):
    with pytest.raises(TastebudError, match=message):
        create("two-tower", **params).fit(data)
