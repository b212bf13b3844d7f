"""A station's identity folded into the global network: an ordinary single-input model.

The global network's first LSTM layer reads [window step, embedding] at every step, and
the embedding is the same at every step of a window, so its share of each gate,
embedding @ kernel[columns:], is a constant: added to the layer's bias it gives the same
function of the window alone. The result is a copy of the station's `plain` model (a local
model's architecture and fixed layers, its own ridge map) carrying the shared LSTM and
correction, so export, parity, the graph contract and the hub see nothing new.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

FIRST_LSTM = "lstm"
EMBEDDING = "station_embedding"
OWN_LAYERS = ("linear", "quad_", "lags")  # a station's ridge map and the fixed summary it reads


def one_hot(indices: np.ndarray, stations: int) -> np.ndarray:
    """[n, stations] float32: row i has a 1 at indices[i] (the last column is "unknown")."""
    return np.eye(stations, dtype=np.float32)[np.asarray(indices, int)]


def fold_identity(global_net: keras.Model, plain: keras.Model, index: int) -> keras.Model:
    """A copy of `plain` (its own linear map kept) carrying `global_net`'s LSTM and correction,
    station `index` folded in."""
    import keras

    baked = keras.models.clone_model(plain)
    baked.set_weights(plain.get_weights())
    embedding = np.asarray(global_net.get_layer(EMBEDDING).get_weights()[0], np.float64)[index]
    shared = {layer.name for layer in global_net.layers if layer.weights}
    for layer in baked.layers:
        if not layer.weights or layer.name not in shared or layer.name.startswith(OWN_LAYERS):
            continue  # the station's own linear map and its fixed summary stay the plain model's
        weights = global_net.get_layer(layer.name).get_weights()
        if layer.name == FIRST_LSTM:
            kernel, recurrent, bias = weights
            columns = layer.get_weights()[0].shape[0]  # the window's encoded columns
            folded = np.asarray(bias, np.float64) + embedding @ np.asarray(kernel[columns:], np.float64)
            weights = [kernel[:columns], recurrent, folded.astype(np.float32)]
        layer.set_weights(weights)
    baked.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return baked


def zero_linear_map(net: keras.Model) -> None:
    """The global network's own (frozen) linear map set to zero: it learns what each station's
    ridge map leaves, and a station's bundle gets its own map (fold_identity keeps it)."""
    for layer in net.layers:
        if layer.name.startswith("linear") and layer.weights:
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
