"""BERT4Rec: sequential recommendation by masked item prediction (Sun et al., CIKM 2019).

The network is SASRec's (:mod:`.sasrec`) with attention in both directions: training hides a
random ``mask_prob`` of the items of each time-ordered sequence behind a mask token and
predicts them from the items on both sides (full softmax, or sampled cross-entropy with
``loss="sampled"``); a sequence in which nothing was drawn has its latest item masked, the
position inference asks about. To recommend, a mask token is appended after the latest
``max_len - 1`` items and the scores at that position rank every item -- for training users,
for histories and for anonymous sessions given in order.

Training, early stopping on each user's held-out latest item, determinism, ``device`` and
saving are SASRec's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from tastebud.models.neural._torch import import_torch
from tastebud.models.neural.sasrec import SASRec, padded
from tastebud.models.registry import register


@register("bert4rec")
@dataclasses.dataclass(kw_only=True, eq=False)
class BERT4Rec(SASRec):
    """Bidirectional self-attention trained by masked item prediction.

    The parameters not listed here are :class:`~tastebud.models.neural.sasrec.SASRec`'s.

    Parameters
    ----------
    mask_prob:
        Share of the items of a training sequence hidden behind the mask token.
    epochs, patience:
        As SASRec's, with longer defaults (120 and 15): masked prediction learns slowly.
    """

    causal: ClassVar[bool] = False

    mask_prob: float = 0.2
    # masked prediction learns the next-item task slowly and unevenly: on ML-100K the
    # validation NDCG still rose after 45 epochs, with plateaus of ten
    epochs: int = 120
    patience: int = 15

    def _validate(self) -> None:
        super()._validate()
        self._check(0.0 < self.mask_prob < 1.0, "mask_prob must be in (0, 1)")

    def _training_rows(self, sequences: list[np.ndarray]) -> tuple[Any, Any, np.ndarray]:
        """Every whole sequence; the targets are drawn per batch by :meth:`_masked`."""
        torch = import_torch()
        rows = [s for s in sequences if len(s) >= 1]
        inputs = torch.from_numpy(padded(rows, int(self.max_len)))
        return inputs, inputs.clone(), np.array([min(len(s), int(self.max_len)) for s in rows])

    def _masked(self, x: Any, y: Any, net: Any) -> tuple[Any, Any]:
        torch = import_torch()
        real = x > 0
        chosen = (torch.rand(x.shape, device=x.device) < float(self.mask_prob)) & real
        nothing = ~chosen.any(dim=1)
        chosen[nothing, -1] = real[nothing, -1]  # the latest item: what inference predicts
        return x.masked_fill(chosen, net.n_items + 1), y * chosen

    def _last_hidden(self, net: Any, block: Any) -> Any:
        torch = import_torch()
        mask = torch.full((len(block), 1), net.n_items + 1, dtype=block.dtype, device=block.device)
        return net(torch.cat([block[:, -(int(self.max_len) - 1) :], mask], dim=1))[:, -1]
