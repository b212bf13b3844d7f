"""A station's identity folded into the global network: an ordinary single-input model.

The global network's first LSTM layer reads [window step, embedding] at every step, and
the embedding is the same at every step of a window, so its share of each gate,
embedding @ kernel[columns:], is a constant: added to the layer's bias it gives the same
function of the window alone. The result has the architecture of a local model (the
`plain` twin built with the same fixed layers), so export, parity, the graph contract and
the hub see nothing new.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

FIRST_LSTM = "lstm"
EMBEDDING = "station_embedding"


def one_hot(indices: np.ndarray, stations: int) -> np.ndarray:
    """[n, stations] float32: row i has a 1 at indices[i] (the last column is "unknown")."""
    return np.eye(stations, dtype=np.float32)[np.asarray(indices, int)]


def fold_identity(global_net: keras.Model, plain: keras.Model, index: int) -> keras.Model:
    """A copy of `plain` carrying `global_net`'s weights with station `index` folded in."""
    import keras

    baked = keras.models.clone_model(plain)
    embedding = np.asarray(global_net.get_layer(EMBEDDING).get_weights()[0], np.float64)[index]
    for layer in baked.layers:
        if not layer.weights:
            continue
        weights = global_net.get_layer(layer.name).get_weights()
        if layer.name == FIRST_LSTM:
            kernel, recurrent, bias = weights
            columns = layer.get_weights()[0].shape[0]  # the window's encoded columns
            folded = np.asarray(bias, np.float64) + embedding @ np.asarray(kernel[columns:], np.float64)
            weights = [kernel[:columns], recurrent, folded.astype(np.float32)]
        layer.set_weights(weights)
    baked.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return baked


def copy_linear_map(source: keras.Model, target: keras.Model) -> None:
    """The ridge-fitted linear map ("linear" or "linear_0", "linear_1", ...) of `source` into `target`."""
    for layer in source.layers:
        if layer.name.startswith("linear") and layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
