"""The forecasts a model must beat, and the error measures used for all of them."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge


def rmse_mae(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, list[float]]:
    """RMSE and MAE per horizon step, in the target's raw units."""
    error = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    return {
        "rmse": np.sqrt(np.mean(error**2, axis=0)).round(6).tolist(),
        "mae": np.mean(np.abs(error), axis=0).round(6).tolist(),
    }


def persistence(x: np.ndarray, horizon: int) -> np.ndarray:
    """Every future step equals the last observed target value."""
    return np.repeat(x[:, -1, :1].astype(np.float64), horizon, axis=1)


def fit_ridge(x_scaled: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> Ridge:
    """Ridge regression on the same lags (and features) the model sees, scaled the same way."""
    return Ridge(alpha=alpha).fit(x_scaled.reshape(len(x_scaled), -1), y)


def ridge_predict(model: Ridge, x_scaled: np.ndarray) -> np.ndarray:
    return model.predict(x_scaled.reshape(len(x_scaled), -1)).reshape(len(x_scaled), -1)
