"""The thread policy (tastebud._threads): the counts applied during fits and scoring, the
user's settings respected, everything restored afterwards."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from tastebud import _threads
from tastebud.data.sample import load_sample
from tastebud.errors import InvalidInputError
from tastebud.models import create
from tastebud.models.factorization import _FactorModel


def blas_threads() -> list[int]:
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})


def pools() -> dict[str, int]:
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()}


def assert_restored(before: dict[str, int]) -> None:
    """The pools loaded before have their counts back (a fit may load more libraries)."""
    after = pools()
    assert {path: after[path] for path in before} == before


@pytest.fixture(autouse=True)
def no_thread_settings(monkeypatch):
    """Every test starts from the defaults, whatever the shell running pytest has set."""
    for name in (_threads.ENV, *_threads.PINNING_VARIABLES):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def sample():
    return load_sample()


# -- the policy ------------------------------------------------------------------------------------
def test_one_thread_by_default_every_core_for_large_work():
    assert _threads.threads() == 1
    assert _threads.threads(large=True) == _threads.cores()


def test_tastebud_threads_sets_the_count(monkeypatch):
    monkeypatch.setenv(_threads.ENV, "3")
    assert _threads.threads() == 3
    assert _threads.threads(large=True) == 3
    monkeypatch.setenv(_threads.ENV, "auto")
    assert _threads.threads() == 1


@pytest.mark.parametrize("value", ["zero", "0", "-2", "1.5"])
def test_a_bad_tastebud_threads_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv(_threads.ENV, value)
    with pytest.raises(InvalidInputError, match=f"TASTEBUD_THREADS must be .* got '{value}'"):
        _threads.threads()


def test_a_count_pinned_in_the_environment_leaves_the_pools_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _threads.threads() is None
    assert _threads.threads(large=True) is None
    monkeypatch.setenv(_threads.ENV, "4")  # tastebud's own variable is the more specific
    assert _threads.threads() == 4


def test_limited_sets_the_pools_and_restores_them():
    before = pools()
    with _threads.limited(3):
        assert blas_threads() == [3]
        with _threads.limited(1):
            assert blas_threads() == [1]
        assert blas_threads() == [3]
    assert_restored(before)
    with _threads.limited(None):
        assert_restored(before)


def test_limited_finds_the_libraries_again_after_an_import(monkeypatch):
    with _threads.limited(3):
        pass
    first = _threads._pool_controller()
    assert _threads._pool_controller() is first  # nothing imported since: kept
    monkeypatch.setitem(sys.modules, "tastebud_test_new_module", types.ModuleType("new"))
    assert _threads._pool_controller() is not first


def test_limited_restores_the_pools_when_the_block_fails():
    before = pools()
    with pytest.raises(RuntimeError), _threads.limited(3):
        raise RuntimeError("boom")
    assert_restored(before)


# -- ALS and BPR (the implicit engines) --------------------------------------------------------
@pytest.fixture
def engine_calls(monkeypatch):
    """What each ALS fit gave the engine (num_threads) and the BLAS count after the engine
    ran (inside the fit, outside the engine's own one-thread BLAS block)."""
    import implicit.cpu.als

    calls: list[dict[str, Any]] = []
    real = implicit.cpu.als.AlternatingLeastSquares

    def engine(**kwargs: Any) -> Any:
        calls.append({"num_threads": kwargs["num_threads"]})
        return real(**kwargs)

    def set_factors(self: Any, users: np.ndarray, items: np.ndarray) -> None:
        calls[-1]["blas"] = blas_threads()
        real_set_factors(self, users, items)

    real_set_factors = _FactorModel._set_factors
    monkeypatch.setattr(implicit.cpu.als, "AlternatingLeastSquares", engine)
    monkeypatch.setattr(_FactorModel, "_set_factors", set_factors)
    return calls


def test_als_runs_on_one_thread_on_small_data(engine_calls, sample):
    before = pools()
    create("als", reg=10.0, n_iterations=2).fit(sample)
    assert engine_calls == [{"num_threads": 1, "blas": [1]}]
    assert_restored(before)


def test_als_runs_on_every_core_on_large_data(engine_calls, sample, monkeypatch):
    monkeypatch.setattr(_threads, "PARALLEL_INTERACTIONS", len(sample))
    create("als", reg=10.0, n_iterations=2).fit(sample)
    cores = _threads.cores()
    assert engine_calls == [{"num_threads": cores, "blas": [cores]}]


def test_als_follows_tastebud_threads_and_its_own_num_threads(engine_calls, sample, monkeypatch):
    monkeypatch.setenv(_threads.ENV, "3")
    create("als", reg=10.0, n_iterations=2).fit(sample)
    create("als", reg=10.0, n_iterations=2, num_threads=2).fit(sample)
    assert engine_calls == [{"num_threads": 3, "blas": [3]}, {"num_threads": 2, "blas": [3]}]


def test_als_leaves_pools_pinned_by_the_environment_alone(engine_calls, sample, monkeypatch):
    untouched = blas_threads()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", str(untouched[0]))
    create("als", reg=10.0, n_iterations=2).fit(sample)
    # 0: implicit's OpenMP default, which follows the environment
    assert engine_calls == [{"num_threads": 0, "blas": untouched}]


def test_the_reg_search_trial_fits_use_the_same_engine_threads(engine_calls, sample, monkeypatch):
    monkeypatch.setenv(_threads.ENV, "2")
    model = create("als", n_iterations=2).fit(sample)  # reg="auto"
    assert len(engine_calls) == len(model.reg_search_) + 1
    assert {call["num_threads"] for call in engine_calls} == {2}


def test_als_gives_the_same_factors_whatever_the_thread_count(sample):
    one = create("als", reg=10.0, n_iterations=3, num_threads=1).fit(sample)
    two = create("als", reg=10.0, n_iterations=3, num_threads=2).fit(sample)
    np.testing.assert_allclose(one.item_factors_, two.item_factors_, rtol=1e-4, atol=1e-5)


# -- HistoryClassifier -------------------------------------------------------------------------
def test_history_classifier_trains_with_one_blas_thread(sample, monkeypatch):
    from tastebud.models.classification import _Softmax

    seen: list[list[int]] = []
    real = _Softmax.train_step

    def step(self: Any, *args: Any, **kwargs: Any) -> float:
        if not seen:
            seen.append(blas_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(_Softmax, "train_step", step)
    before = pools()
    create("history-classifier", epochs=1).fit(sample)
    assert seen == [[1]]
    assert_restored(before)


# -- torch models ------------------------------------------------------------------------------
@pytest.fixture
def torch() -> Any:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture
def torch_threads_seen(monkeypatch, torch):
    """torch's thread count during each training run and each network use."""
    from tastebud.models.neural import _torch

    seen: dict[str, list[int]] = {"train": [], "network": []}
    real_train, real_network = _torch.train, _torch.TorchRecommender._network

    def train(*args: Any, **kwargs: Any) -> Any:
        seen["train"].append(torch.get_num_threads())
        return real_train(*args, **kwargs)

    def network(self: Any) -> Any:
        seen["network"].append(torch.get_num_threads())
        return real_network(self)

    monkeypatch.setattr(_torch, "train", train)
    monkeypatch.setattr(_torch.TorchRecommender, "_network", network)
    return seen


TINY_SASREC = {"epochs": 1, "factors": 8, "progress": False}


@pytest.mark.neural
def test_torch_models_fit_and_score_on_one_thread(torch_threads_seen, torch, sample):
    torch.set_num_threads(2)  # a default of more than one, as on any multi-core machine
    default = torch.get_num_threads()
    model = create("sasrec", **TINY_SASREC).fit(sample)
    model.recommend(sample.users.ids[:5], k=3)
    model.recommend_from_history(sample.items.ids[:3].tolist(), k=3)  # the service's path
    assert torch_threads_seen["train"] == [1]
    assert len(torch_threads_seen["network"]) >= 2  # recommend and the fold-in
    assert set(torch_threads_seen["network"]) == {1}
    assert torch.get_num_threads() == default


@pytest.mark.neural
def test_torch_follows_tastebud_threads(torch_threads_seen, torch, sample, monkeypatch):
    monkeypatch.setenv(_threads.ENV, "3")
    default = torch.get_num_threads()
    create("sasrec", **TINY_SASREC).fit(sample).recommend(sample.users.ids[:5], k=3)
    assert torch_threads_seen["train"] == [3]
    assert set(torch_threads_seen["network"]) == {3}
    assert torch.get_num_threads() == default


@pytest.mark.neural
def test_a_torch_count_the_user_set_is_kept(torch_threads_seen, torch, sample):
    mine = torch.get_num_interop_threads() + 1  # differs from torch's default
    torch.set_num_threads(mine)
    create("sasrec", **TINY_SASREC).fit(sample).recommend(sample.users.ids[:5], k=3)
    assert torch_threads_seen["train"] == [mine]
    assert set(torch_threads_seen["network"]) == {mine}
    assert torch.get_num_threads() == mine


@pytest.mark.neural
def test_torch_threads_are_restored_when_a_fit_fails(torch, sample, monkeypatch):
    from tastebud.models.neural import _torch

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("training failed")

    monkeypatch.setattr(_torch, "train", fail)
    default = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="training failed"):
        create("sasrec", **TINY_SASREC).fit(sample)
    assert torch.get_num_threads() == default


@pytest.mark.neural
def test_faiss_searches_on_tastebud_threads_and_gets_its_count_back(monkeypatch):
    faiss = pytest.importorskip("faiss")
    from tastebud.ann import VectorIndex

    rng = np.random.default_rng(0)
    index = VectorIndex(rng.standard_normal((2_000, 8)), backend="faiss")
    default = faiss.omp_get_max_threads()
    seen: list[int] = []
    real = type(index._index).search

    def search(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(faiss.omp_get_max_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(index._index), "search", search)
    monkeypatch.setenv(_threads.ENV, "3")
    idx, _ = index.search(rng.standard_normal((4, 8)), 5)
    assert seen == [3] and idx.shape == (4, 5)
    assert faiss.omp_get_max_threads() == default
