"""The scikit-learn autoencoder every peer serves, and its encode and reconstruct.

This file imports numpy, scikit-learn and joblib only: the peers' servers (run by their own
virtualenvs, without this repository's packages) import it by path, and the runner imports it
as ``benchmarks.peers.servers.sklearn_autoencoder``.

The model is a :class:`~sklearn.pipeline.Pipeline` of a ``MinMaxScaler(clip=True)`` (the
artifact's scaler: raw 0..16 pixels to the network's [0, 1] units, values outside the training
range clipped) and an ``MLPRegressor`` whose ``coefs_`` and ``intercepts_`` are the artifact's
layers. ``MLPRegressor.predict`` of the scaled pixels is the network's output; the service also
clips that to [0, 1] (the range seen in training) before mapping it back to pixels, a step the
pipeline has no estimator for, so :func:`reconstruct` does it in three lines of numpy.
:func:`encode` is the forward pass up to the latent layer with the same ``coefs_``.

The saved file (:func:`save`) is a joblib pickle of a dict holding only scikit-learn objects
and an int, so loading it needs no module of this repository.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from numpy.typing import NDArray
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

__all__ = ["PIXEL_MAX", "build", "encode", "load", "reconstruct", "save"]

Array = NDArray[np.float64]
PIXEL_MAX = 16.0

# scikit-learn's hidden activations (sklearn.neural_network._base.ACTIVATIONS, not public).
_HIDDEN: dict[str, Callable[[Array], Array]] = {
    "identity": lambda h: h,
    "tanh": np.tanh,
    "logistic": lambda h: 1.0 / (1.0 + np.exp(-h)),
    "relu": lambda h: np.maximum(h, 0.0),
}


def build(
    weights: Sequence[NDArray[Any]],
    biases: Sequence[NDArray[Any]],
    activation: str,
    scaler_min: NDArray[Any],
    scaler_scale: NDArray[Any],
) -> Pipeline:
    """The fitted pipeline (scaler, MLPRegressor) with exactly these weights.

    Parameters
    ----------
    weights, biases : sequence of ndarray
        ``W{i}`` of shape (n_i, n_{i+1}) and ``b{i}`` of shape (n_{i+1},) for every layer.
    activation : str
        Hidden-layer activation (``"tanh"``, ``"relu"``, ``"logistic"``, ``"identity"``).
    scaler_min, scaler_scale : ndarray of shape (64,)
        ``(x - scaler_min) * scaler_scale`` maps the training range onto [0, 1].

    Returns
    -------
    Pipeline
        ``scale`` (``MinMaxScaler(clip=True)``) then ``mlp`` (``MLPRegressor``). The layers are
        stored as float64 (a float32 weight is exactly a float64 one), so scikit-learn computes
        in float64 as it does for a model fitted on float64 data.
    """
    lo = np.asarray(scaler_min, dtype=np.float64)
    scale = np.asarray(scaler_scale, dtype=np.float64)
    scaler = MinMaxScaler(feature_range=(0.0, 1.0), clip=True)
    # The attributes fit() would set; transform() is X * scale_ + min_, clipped.
    scaler.scale_ = scale.copy()
    scaler.min_ = -lo * scale
    scaler.data_min_ = lo.copy()
    scaler.data_range_ = 1.0 / scale
    scaler.data_max_ = lo + scaler.data_range_
    scaler.n_features_in_ = len(lo)
    scaler.n_samples_seen_ = 1

    coefs = [np.asarray(w, dtype=np.float64) for w in weights]
    intercepts = [np.asarray(b, dtype=np.float64) for b in biases]
    sizes = [coefs[0].shape[0]] + [w.shape[1] for w in coefs]
    mlp = MLPRegressor(hidden_layer_sizes=tuple(sizes[1:-1]), activation=activation)
    # The attributes fit() would set and predict() reads.
    mlp.coefs_ = coefs
    mlp.intercepts_ = intercepts
    mlp.n_features_in_ = sizes[0]
    mlp.n_outputs_ = sizes[-1]
    mlp.n_layers_ = len(sizes)
    mlp.out_activation_ = "identity"
    mlp.n_iter_ = 0
    mlp.t_ = 0
    return Pipeline([("scale", scaler), ("mlp", mlp)])


def _parts(pipeline: Pipeline) -> tuple[MinMaxScaler, MLPRegressor]:
    return pipeline.named_steps["scale"], pipeline.named_steps["mlp"]


def encode(pipeline: Pipeline, latent_layer: int, X: NDArray[Any]) -> Array:
    """Latent codes: the MLP's forward pass up to (and including) hidden layer ``latent_layer``.

    Parameters
    ----------
    pipeline : Pipeline
        From :func:`build` or :func:`load`.
    latent_layer : int
        The manifest's ``latent_layer``: the number of weight layers before the code.
    X : array-like of shape (n, 64)
        Pixels 0..16.

    Returns
    -------
    Z : ndarray of shape (n, latent size)
    """
    scaler, mlp = _parts(pipeline)
    h: Array = scaler.transform(np.asarray(X, dtype=np.float64))
    hidden = _HIDDEN[mlp.activation]
    for W, b in zip(mlp.coefs_[:latent_layer], mlp.intercepts_[:latent_layer], strict=True):
        h = hidden(h @ W + b)
    return h


def reconstruct(pipeline: Pipeline, X: NDArray[Any]) -> tuple[Array, Array]:
    """Reconstructions in pixel units and their errors, as the service's ``/reconstruct``.

    Parameters
    ----------
    pipeline : Pipeline
        From :func:`build` or :func:`load`.
    X : array-like of shape (n, 64)
        Pixels 0..16.

    Returns
    -------
    vectors : ndarray of shape (n, 64)
        ``MLPRegressor.predict`` of the scaled pixels, clipped to [0, 1], mapped back to pixels
        (``MinMaxScaler.inverse_transform``) and clipped to [0, 16].
    errors : ndarray of shape (n,)
        Mean squared error per row in the scaled [0, 1] units.
    """
    scaler, mlp = _parts(pipeline)
    Xs: Array = scaler.transform(np.asarray(X, dtype=np.float64))
    Ys: Array = np.clip(mlp.predict(Xs), 0.0, 1.0)
    errors: Array = np.mean((Xs - Ys) ** 2, axis=1)
    vectors: Array = np.clip(scaler.inverse_transform(Ys), 0.0, PIXEL_MAX)
    return vectors, errors


def save(path: Path | str, pipeline: Pipeline, latent_layer: int) -> None:
    """Write ``{"pipeline": pipeline, "latent_layer": latent_layer}`` with joblib."""
    joblib.dump({"pipeline": pipeline, "latent_layer": int(latent_layer)}, path)


def load(path: Path | str) -> tuple[Pipeline, int]:
    """The pipeline and latent layer written by :func:`save`."""
    saved = joblib.load(path)
    return saved["pipeline"], int(saved["latent_layer"])
