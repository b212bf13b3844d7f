"""edgecast: train a Keras LSTM forecaster, export it with its scaler, serve it on a hub."""

__version__ = "0.1.0"
