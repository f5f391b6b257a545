"""What the torch models share: import, device, seeding, the training loop, weights as arrays.

Weights are saved like every other learned array -- numpy arrays in the model's ``.npz``, no
pickle -- under ``weights/<parameter name>``; a loaded model rebuilds its network from its
JSON parameters and those arrays.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from tastebud.errors import TastebudError
from tastebud.models.base import Recommender

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHTS = "weights/"


def import_torch() -> Any:
    """The torch module, or a clear error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise TastebudError(
            "this model needs PyTorch: pip install 'tastebud[neural]' "
            "(on CPU-only machines: pip install torch==2.13.0)"
        ) from None
    return torch


def pick_device(device: str) -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; otherwise the named device."""
    torch = import_torch()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise TastebudError(f"unknown device {device!r}: {err}") from None


@dataclasses.dataclass
class History:
    """One training run: the loss and validation score of each epoch, the best epoch."""

    loss: list[float] = dataclasses.field(default_factory=list)
    validation: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = -1


def train(
    module: torch.nn.Module,
    epoch: Callable[[int], float],
    validate: Callable[[], float] | None,
    *,
    epochs: int,
    patience: int,
    progress: bool,
    desc: str,
) -> History:
    """Run ``epoch(i)`` (one pass; returns its mean loss) up to ``epochs`` times. With
    ``validate`` (a score, higher is better) training stops after ``patience`` epochs without
    a better score and the module gets back the weights of its best epoch."""
    history = History()
    best_score = -np.inf
    best_state: dict[str, Any] | None = None
    since_best = 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for i in bar:
        module.train()
        history.loss.append(float(epoch(i)))
        if validate is None:
            history.best_epoch = i
            continue
        module.eval()
        score = float(validate())
        history.validation.append(score)
        bar.set_postfix(loss=f"{history.loss[-1]:.4f}", val=f"{score:.4f}")
        if score > best_score:
            best_score, best_state, since_best = score, copy.deepcopy(module.state_dict()), 0
            history.best_epoch = i
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


class TorchRecommender(Recommender):
    """Base of the torch models: the network's weights travel with ``save``/``load`` as
    arrays, and the network is rebuilt on first use after a load (:meth:`_build`)."""

    @abc.abstractmethod
    def _build(self) -> torch.nn.Module:
        """A new, untrained network for this model's parameters and catalogue."""

    def _network(self) -> torch.nn.Module:
        net = self.__dict__.get("_net")
        if net is None:
            torch = import_torch()
            net = self._build()
            state = {
                key[len(WEIGHTS) :]: torch.from_numpy(np.array(value))
                for key, value in self.__dict__.items()
                if key.startswith(WEIGHTS)
            }
            net.load_state_dict(state)
            net.to(pick_device(self.device))  # type: ignore[attr-defined]
            net.eval()
            self.__dict__["_net"] = net
        return net

    def _keep(self, net: torch.nn.Module) -> None:
        """Make ``net`` the fitted network (its weights are copied as arrays for saving)."""
        for key in [k for k in self.__dict__ if k.startswith(WEIGHTS)]:
            del self.__dict__[key]
        for name, tensor in net.state_dict().items():
            self.__dict__[WEIGHTS + name] = tensor.detach().cpu().numpy().copy()
        net.eval()
        self.__dict__["_net"] = net

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state.update({k: v for k, v in self.__dict__.items() if k.startswith(WEIGHTS)})
        return state

    def _restore_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.__dict__.pop("_net", None)
        super()._restore_state(config, arrays)
