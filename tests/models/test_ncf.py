"""NCF (GMF, MLP, NeuMF) on block data whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import checkerboard
from tastebud.errors import TastebudError
from tastebud.models import create, load
from tastebud.models.neural._torch import import_torch, sample_negatives

pytestmark = pytest.mark.neural

ARCHITECTURES = ["gmf", "mlp", "neumf"]
SMALL = {"factors": 8, "layers": (64, 32, 16), "epochs": 20, "batch_size": 64}
SMALL |= {"learning_rate": 0.003, "patience": 0}


@pytest.fixture(scope="module")
def data():
    return checkerboard(60, 20, seed=3)


@pytest.fixture(scope="module")
def fitted(data):
    return {arch: create("ncf", model=arch, **SMALL).fit(data) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_users_get_the_unseen_items_of_their_own_block(arch, fitted, data):
    model = fitted[arch]
    assert in_block_share(model, data) >= 0.9  # random: 0.5


def in_block_share(model, data, k=2):
    """Share of the in-block slots of the top-k (a user with fewer than k unseen items of
    their block has fewer) that hold an item of the user's block."""
    inside = possible = 0
    for user in data.users.ids:
        first_half = int(user) < 30
        seen = set(data.history(user)["item"].astype(int))
        unseen_in_block = [i for i in range(20) if (i < 10) == first_half and i not in seen]
        top = model.recommend(user, k=k)["item"].astype(int)
        inside += sum((item < 10) == first_half for item in top)
        possible += min(k, len(unseen_in_block))
    return inside / possible


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scoring_every_item_agrees_with_the_pairwise_forward(arch, fitted):
    """The inference path (split first layer, whole catalog) is the training network."""
    torch = import_torch()
    net = fitted[arch]._network()
    users = torch.arange(7)
    with torch.no_grad():
        every = net.score_all(users)
        pairs = net(users.repeat_interleave(20), torch.arange(20).repeat(7)).reshape(7, 20)
    np.testing.assert_allclose(every.numpy(), pairs.numpy(), rtol=1e-5, atol=1e-6)


def test_early_stopping_keeps_the_best_epoch(data):
    model = create("ncf", **{**SMALL, "epochs": 25, "patience": 2}).fit(data)
    best = int(np.argmax(model.validation_ndcg_))
    assert model.best_epoch_ == best
    assert len(model.validation_ndcg_) in (25, best + 3)


def test_same_seed_same_model_and_save_load(fitted, data, tmp_path):
    again = create("ncf", model="neumf", **SMALL).fit(data)
    users = [*data.users.ids[:5].tolist(), "nobody"]
    np.testing.assert_array_equal(again.score(users), fitted["neumf"].score(users))
    loaded = load(fitted["neumf"].save(tmp_path / "ncf"))
    np.testing.assert_allclose(loaded.score(users), fitted["neumf"].score(users), rtol=1e-6)
    assert loaded.get_params() == fitted["neumf"].get_params()


def test_negatives_are_never_positives(data):
    positives = data.matrix("binary")
    users = np.repeat(np.arange(data.n_users), 50)
    drawn = sample_negatives(positives, users, np.random.default_rng(0))
    assert not np.asarray(positives[users, drawn]).any()
    assert len(np.unique(drawn)) == data.n_items  # uniform over the rest: every item shows up


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "deep"}, "model"),
        ({"layers": (15, 8)}, "layers"),
        ({"layers": (16,)}, "layers"),
        ({"negatives": 0}, "negatives"),
        ({"patience": -1}, "patience"),
    ],
)
def test_bad_parameters_are_clear_errors(params, message, data):
    with pytest.raises(TastebudError, match=message):
        create("ncf", **params).fit(data)


def test_training_runs_with_deterministic_kernels_and_restores_the_setting(data, monkeypatch):
    """Embedding backward sums repeated rows in thread order unless torch is told to be
    deterministic (on ML-100K that changed the two-tower model between two fits)."""
    import tastebud.models.neural._torch as shared

    torch = import_torch()
    seen = []
    original = shared.train

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(shared, "train", spy)
    before = torch.are_deterministic_algorithms_enabled()
    create("ncf", **{**SMALL, "epochs": 1, "device": "cpu"}).fit(data)
    assert seen == [True]
    assert torch.are_deterministic_algorithms_enabled() == before
