"""RMSE and MAE against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from tastebud.errors import InvalidInputError
from tastebud.metrics import mae, rmse


def test_rmse_and_mae_by_hand() -> None:
    y_true = [1.0, 2.0, 3.0, 4.0]
    y_pred = [1.0, 3.0, 1.0, 4.5]
    # errors 0, 1, -2, 0.5: squared 0 + 1 + 4 + 0.25 = 5.25, absolute 0 + 1 + 2 + 0.5 = 3.5
    assert rmse(y_true, y_pred) == pytest.approx(math.sqrt(5.25 / 4))
    assert mae(y_true, y_pred) == pytest.approx(3.5 / 4)


def test_perfect_prediction_and_types() -> None:
    truth = pd.Series([3, 4, 5])  # integer Series works
    assert rmse(truth, np.array([3.0, 4.0, 5.0])) == 0.0
    assert mae(truth, [3, 4, 5]) == 0.0
    assert isinstance(rmse([1.0], [2.0]), float)
    assert rmse([1.0], [3.0]) == pytest.approx(2.0)  # single row: |1 - 3|
    assert mae([1.0], [3.0]) == pytest.approx(2.0)


@pytest.mark.parametrize("fn", [rmse, mae])
def test_errors(fn: Callable[..., float]) -> None:
    call = fn
    with pytest.raises(InvalidInputError, match="length"):
        call([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInputError, match="empty"):
        call([], [])
    with pytest.raises(InvalidInputError, match="finite"):
        call([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="finite"):
        call([1.0, 2.0], [1.0, np.inf])
    with pytest.raises(InvalidInputError, match="1-D"):
        call([[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(InvalidInputError, match="numeric"):
        call(["a", "b"], [1.0, 2.0])
    with pytest.raises(ValueError, match="length"):  # InvalidInputError is a ValueError
        call([1.0], [1.0, 2.0])
