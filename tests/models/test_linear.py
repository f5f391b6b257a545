from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import checkerboard
from tastebud import Dataset
from tastebud.errors import InvalidInputError
from tastebud.models import create
from tastebud.models.linear import spd_inverse


def test_ease_weights_equal_the_closed_form():
    x = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=float)
    rows, cols = np.nonzero(x)
    ds = Dataset.from_frame(pd.DataFrame({"user": rows, "item": cols}))
    model = create("ease", reg=2.0).fit(ds)
    # Steck 2019: P = (XᵀX + λI)⁻¹, B = I - P diagMat(1/diag P)
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(3))
    b = np.eye(3) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(model.weights_, b, atol=1e-6)
    assert np.all(np.diag(model.weights_) == 0)
    np.testing.assert_allclose(model.score([0])[0], x[0] @ b, atol=1e-6)


def test_spd_inverse_matches_numpy_and_rejects_indefinite():
    rng = np.random.default_rng(1)
    a = rng.random((30, 30))
    g = a @ a.T + np.eye(30)
    np.testing.assert_allclose(spd_inverse(g.copy()), np.linalg.inv(g), atol=1e-8)
    with pytest.raises(InvalidInputError, match="positive definite"):
        spd_inverse(-np.eye(3))


def test_ease_recommends_within_the_block_and_explains_by_history():
    ds = checkerboard()
    model = create("ease", reg=5.0).fit(ds)
    # the Gram matrix is block diagonal, so is its inverse: no weight crosses the blocks
    np.testing.assert_allclose(model.weights_[:10, 10:], 0, atol=1e-6)
    recs = model.recommend(list(range(40)), k=1)
    in_block = np.where(recs.user < 20, recs.item < 10, recs.item >= 10)
    assert in_block.all() and (recs.score > 0).all()
    sims = model.similar_items([0, 15], k=3)
    assert (sims[sims.item == 0].similar < 10).all() and (sims[sims.item == 15].similar >= 10).all()
    reason = model.explain(0, recs[recs.user == 0].item.iloc[:1]).reason.iloc[0]
    seen = set(ds.history(0).item)
    named = int(reason.removeprefix("similar to ").removesuffix(" in your history"))
    assert named in seen


def test_ease_max_items_models_the_popular_items_and_ranks_the_rest_last():
    ds = checkerboard()
    model = create("ease", reg=5.0, max_items=12).fit(ds)
    assert len(model.kept_items_) == 12
    recs = model.recommend([0], k=20, exclude_seen=False)
    modeled = set(ds.items.to_ids(model.kept_items_))
    first = recs.item.iloc[:12].tolist()
    assert set(first) == modeled  # every modeled item before any other
    assert len(recs) == 20


def test_ease_rejects_bad_params():
    ds = checkerboard()
    with pytest.raises(InvalidInputError, match="reg"):
        create("ease", reg=0).fit(ds)
    with pytest.raises(InvalidInputError, match="values"):
        create("ease", values="stars").fit(ds)  # type: ignore[arg-type]
