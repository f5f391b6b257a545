"""device="auto" picks CUDA when torch has it, else the CPU; a named device is checked."""

from __future__ import annotations

import pytest

from tastebud.errors import TastebudError

torch = pytest.importorskip("torch")
from tastebud.models.neural._torch import pick_device  # noqa: E402

pytestmark = pytest.mark.neural


def test_auto_is_cuda_when_present_else_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    assert pick_device("cuda:1") == torch.device("cuda:1")


def test_a_named_device_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(TastebudError, match="unknown device 'abacus'"):
        pick_device("abacus")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TastebudError, match="no CUDA device"):
        pick_device("cuda")


@pytest.mark.parametrize("name", ["ncf", "two-tower", "hybrid-bpr", "sasrec", "bert4rec"])
def test_a_cpu_fit_over_max_cpu_interactions_refuses_before_training(name: str) -> None:
    """Every torch model on the CPU refuses a fit over max_cpu_interactions at once, naming
    the limit, a GPU and the models that scale; None lifts the limit."""
    from tastebud.data.sample import load_sample
    from tastebud.errors import InvalidInputError
    from tastebud.models import create

    data = load_sample()
    model = create(name, device="cpu", max_cpu_interactions=data.n_interactions - 1, epochs=1)
    with pytest.raises(
        InvalidInputError,
        match=rf"{name} on the CPU: .* {data.n_interactions:,} interactions, over "
        rf"max_cpu_interactions={data.n_interactions - 1:,} .*device='cuda'.*als",
    ):
        model.fit(data)
    assert not hasattr(model, "loss_")  # no epoch ran
    create(name, device="cpu", max_cpu_interactions=None, epochs=1).fit(data)
