"""Rating-prediction error metrics."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tastebud.errors import InvalidInputError

__all__ = ["mae", "rmse"]


def _pair(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    try:
        true = np.asarray(y_true, dtype=np.float64)
        pred = np.asarray(y_pred, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"ratings must be numeric: {exc}") from None
    if true.ndim != 1 or pred.ndim != 1:
        raise InvalidInputError(
            f"y_true and y_pred must be 1-D, got {true.ndim} and {pred.ndim} dimensions"
        )
    if len(true) != len(pred):
        raise InvalidInputError(f"y_true and y_pred differ in length: {len(true)} vs {len(pred)}")
    if len(true) == 0:
        raise InvalidInputError("y_true and y_pred are empty")
    if not (np.isfinite(true).all() and np.isfinite(pred).all()):
        raise InvalidInputError("y_true and y_pred must be finite (no NaN or inf)")
    return true, pred


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Root mean squared error.

    ``RMSE = sqrt( (1/n) * sum_{j=1..n} (y_pred_j - y_true_j)^2 )``

    References
    ----------
    Herlocker, Konstan, Terveen & Riedl, "Evaluating collaborative filtering recommender
    systems", ACM TOIS 22(1), 2004, §3.2.
    """
    true, pred = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Mean absolute error.

    ``MAE = (1/n) * sum_{j=1..n} |y_pred_j - y_true_j|``

    References
    ----------
    Herlocker, Konstan, Terveen & Riedl, "Evaluating collaborative filtering recommender
    systems", ACM TOIS 22(1), 2004, §3.2.
    """
    true, pred = _pair(y_true, y_pred)
    return float(np.mean(np.abs(pred - true)))
