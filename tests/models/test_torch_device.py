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
