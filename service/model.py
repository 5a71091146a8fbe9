"""The autoencoder's forward pass in plain numpy (no scikit-learn on the serving path).

Conventions: ``X`` is ``(n, 64)`` in pixel units 0..16, ``Z`` is ``(n, 2)``. Scaling to the
network's [0, 1] units happens here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.artifact import PIXEL_MAX, Artifact, load_artifact

__all__ = ["Autoencoder", "scale_pixels", "unscale_pixels"]

Array = NDArray[np.float64]


def _logistic(x: Array) -> Array:
    # Same formula as scikit-learn's (scipy.special.expit) so outputs agree to rounding.
    return 1.0 / (1.0 + np.exp(-x))


def _relu(x: Array) -> Array:
    return np.maximum(x, 0.0)


def _identity(x: Array) -> Array:
    return x


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "identity": _identity,
    "logistic": _logistic,
    "tanh": np.tanh,
    "relu": _relu,
}


def scale_pixels(X: Array, scaler_min: Array, scaler_scale: Array) -> Array:
    """Map pixel units to the network's [0, 1] units, clipping values unseen in training.

    Parameters
    ----------
    X : ndarray of shape (n, 64)
        Pixel values.
    scaler_min, scaler_scale : ndarray of shape (64,)
        The min-max scaler fitted on the training rows.

    Returns
    -------
    Xs : ndarray of shape (n, 64)
        Scaled values in [0, 1].
    """
    return np.clip((X - scaler_min) * scaler_scale, 0.0, 1.0)


def unscale_pixels(Xs: Array, scaler_min: Array, scaler_scale: Array) -> Array:
    """Map the network's units back to pixel units, clipped to the valid range [0, 16].

    Parameters
    ----------
    Xs : ndarray of shape (n, 64)
        Values in scaled units (network output).
    scaler_min, scaler_scale : ndarray of shape (64,)
        The min-max scaler fitted on the training rows.

    Returns
    -------
    X : ndarray of shape (n, 64)
    """
    return np.clip(Xs / scaler_scale + scaler_min, 0.0, PIXEL_MAX)


class Autoencoder:
    """A loaded autoencoder: ``encode``, ``decode`` and ``reconstruct`` on numpy arrays.

    Hidden layers use the artifact's activation; the output layer is linear, as in
    scikit-learn's ``MLPRegressor``. The latent code is the (activated) output of the 2-unit
    hidden layer.
    """

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self._min = artifact.scaler_min
        self._scale = artifact.scaler_scale
        self._act = _ACTIVATIONS[artifact.activation]
        k = artifact.latent_layer
        pairs = list(zip(artifact.weights, artifact.biases, strict=True))
        self._encoder = pairs[:k]
        self._decoder = pairs[k:]

    @classmethod
    def from_dir(cls, model_dir: Path | str) -> Autoencoder:
        """Load and verify an artifact directory (raises ``ArtifactError``)."""
        return cls(load_artifact(model_dir))

    @property
    def version(self) -> str:
        return self.artifact.model_version

    @property
    def manifest(self) -> dict[str, Any]:
        return self.artifact.manifest

    def _encode_scaled(self, Xs: Array) -> Array:
        h = Xs
        for W, b in self._encoder:
            h = self._act(h @ W + b)
        return h

    def _network_output(self, Z: Array) -> Array:
        # The raw linear output layer, as scikit-learn's predict gives it.
        h = Z
        last = len(self._decoder) - 1
        for i, (W, b) in enumerate(self._decoder):
            h = h @ W + b
            if i != last:
                h = self._act(h)
        return h

    def _decode_scaled(self, Z: Array) -> Array:
        # Reconstructions stay within the range seen in training ([0, 1] in scaled units).
        return np.clip(self._network_output(Z), 0.0, 1.0)

    def encode(self, X: Array) -> Array:
        """Latent codes of pixel vectors.

        Parameters
        ----------
        X : ndarray of shape (n, 64)
            Pixel values 0..16.

        Returns
        -------
        Z : ndarray of shape (n, 2)
        """
        return self._encode_scaled(scale_pixels(X, self._min, self._scale))

    def decode(self, Z: Array) -> Array:
        """Pixel vectors from latent codes.

        Parameters
        ----------
        Z : ndarray of shape (n, 2)

        Returns
        -------
        X : ndarray of shape (n, 64)
            Pixel values, clipped to each pixel's training range (within [0, 16]).
        """
        return unscale_pixels(self._decode_scaled(Z), self._min, self._scale)

    def reconstruct(self, X: Array) -> tuple[Array, Array]:
        """Reconstructions and their errors.

        Parameters
        ----------
        X : ndarray of shape (n, 64)
            Pixel values 0..16.

        Returns
        -------
        X_hat : ndarray of shape (n, 64)
            ``decode(encode(X))``, pixel values clipped to [0, 16].
        errors : ndarray of shape (n,)
            Mean squared error per vector in scaled [0, 1] units, between the scaled input and
            its reconstruction: an anomaly score.
        """
        Xs = scale_pixels(X, self._min, self._scale)
        Ys = self._decode_scaled(self._encode_scaled(Xs))
        errors = np.mean((Ys - Xs) ** 2, axis=1)
        return unscale_pixels(Ys, self._min, self._scale), errors
