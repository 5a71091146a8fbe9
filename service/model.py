"""The autoencoder's forward pass in plain numpy (no scikit-learn on the serving path).

Conventions: ``X`` is ``(n, 64)`` in pixel units 0..16, ``Z`` is ``(n, 2)``. Scaling to the
network's [0, 1] units happens here and nowhere else. Every method also takes ``b`` requests
stacked, ``(b, n, 64)`` or ``(b, n, 2)`` with ``n`` at most 1024, and gives each the same
result, to the last bit, as computed alone: numpy's ``matmul`` makes the same BLAS call for each
(the service's batching relies on it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
from numpy.typing import NDArray

from service.artifact import PIXEL_MAX, Artifact, ArtifactError, load_artifact

__all__ = ["Autoencoder", "Forward", "scale_pixels", "unscale_pixels"]

Array = NDArray[np.float64]


_DISTANCE_ROWS = 1024  # rows per block of the distance computation


class Forward(NamedTuple):
    """Everything one pass computes (see :meth:`Autoencoder.forward`)."""

    latent: Array  # (n, 2)
    reconstruction: Array  # (n, 64), pixel units
    errors: Array  # (n,)
    pixel_errors: Array  # (n, 64)
    distances: Array | None  # (n,); None for a model without prototypes (in training only)


def _clip01(x: Array) -> Array:
    # In place; two ufunc calls cost less than np.clip's dispatch on small arrays.
    np.maximum(x, 0.0, out=x)
    return np.minimum(x, 1.0, out=x)


# In-place activations: the forward pass allocates one array per layer, not two.
def _logistic(x: Array) -> Array:
    # Same formula as scikit-learn's (scipy.special.expit) so outputs agree to rounding.
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    return np.reciprocal(x, out=x)


def _tanh(x: Array) -> Array:
    return np.tanh(x, out=x)


def _relu(x: Array) -> Array:
    return np.maximum(x, 0.0, out=x)


def _identity(x: Array) -> Array:
    return x


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "identity": _identity,
    "logistic": _logistic,
    "tanh": _tanh,
    "relu": _relu,
}

Layers = list[tuple[Array, Array]]


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
    Xs = X - scaler_min
    Xs *= scaler_scale
    return _clip01(Xs)


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
    X = Xs / scaler_scale
    X += scaler_min
    return np.clip(X, 0.0, PIXEL_MAX, out=X)


class Autoencoder:
    """A loaded autoencoder: ``encode``, ``decode`` and ``reconstruct`` on numpy arrays.

    Everything is computed in the model's own precision, :attr:`dtype`: the dtype its weights
    were trained and stored in (float32 for the default model). Inputs of any float type are
    converted to it, and results come back in it: more digits than the weights have would only
    be rounding noise, and float32 runs at twice the speed of float64.

    Hidden layers use the artifact's activation; the output layer is linear, as in
    scikit-learn's ``MLPRegressor``. The latent code is the (activated) output of the 2-unit
    hidden layer.
    """

    def __init__(self, artifact: Artifact, outlier_quantile: float | None = None) -> None:
        self.artifact = artifact
        self.dtype: np.dtype[Any] = artifact.dtype
        self.outlier_quantile = outlier_quantile
        # Errors above it are outliers (None without a quantile: training's use).
        # In the model's dtype, like the errors it is compared with (and printed with as many
        # digits: the calibration's thresholds are errors the model computed).
        self.threshold: np.floating[Any] | None = None
        self.distance_threshold: np.floating[Any] | None = None
        if outlier_quantile is not None:
            self.threshold = self.dtype.type(artifact.outlier_threshold(outlier_quantile))
            self.distance_threshold = self.dtype.type(artifact.distance_threshold(outlier_quantile))
        # Distances to the prototypes as |x|^2 + min_k (|p_k|^2 - 2 x.p_k): one matrix product.
        P = artifact.prototypes
        self._prototypes: tuple[Array, Array] | None = None
        if P is not None:
            P64 = P.astype(np.float64)
            self._prototypes = (
                cast(Array, (-2.0 * P64.T).astype(self.dtype)),
                cast(Array, np.einsum("ij,ij->i", P64, P64).astype(self.dtype)),
            )
        self._act = _ACTIVATIONS[artifact.activation]
        k = artifact.latent_layer
        # Typed as float64 like the rest of the module: float32 arrays behave the same here.
        layers = cast(Layers, list(zip(artifact.weights, artifact.biases, strict=True)))
        self._scaler_min = cast(Array, artifact.scaler_min.astype(self.dtype))
        self._scaler_scale = cast(Array, artifact.scaler_scale.astype(self.dtype))
        # The scaler folded into the first layer, computed in float64 then stored in the
        # model's dtype: clip((x - lo) * s, 0, 1) @ W + b equals clip(x, lo, hi) @ (s * W) +
        # (b - (lo * s) @ W) with hi = lo + 1 / s. Clipping the raw pixels to the training
        # range replaces four passes over the input with two (a fifth of a 10 000-row encode)
        # and three numpy calls fewer per request.
        lo, scale = artifact.scaler_min, artifact.scaler_scale
        W0, b0 = (a.astype(np.float64) for a in layers[0])
        first = cast(
            tuple[Array, Array],
            ((scale[:, None] * W0).astype(self.dtype), (b0 - (lo * scale) @ W0).astype(self.dtype)),
        )
        self._clip_hi = cast(Array, (lo + 1.0 / scale).astype(self.dtype))
        self._encoder = [first, *layers[1:k]]  # takes clipped raw pixels, not scaled ones
        self._decoder = layers[k:]

    @classmethod
    def from_dir(cls, model_dir: Path | str, outlier_quantile: float | None = None) -> Autoencoder:
        """Load and verify an artifact directory (raises ``ArtifactError``, also when its
        calibration has no threshold for ``outlier_quantile``)."""
        artifact = load_artifact(model_dir)
        try:
            return cls(artifact, outlier_quantile)
        except ArtifactError as exc:
            raise ArtifactError(f"{model_dir}: {exc}") from None

    @property
    def version(self) -> str:
        return self.artifact.model_version

    @property
    def manifest(self) -> dict[str, Any]:
        return self.artifact.manifest

    def _own(self, X: Array) -> Array:
        return np.asarray(X, dtype=self.dtype)

    def _clip(self, X: Array) -> Array:
        """Pixels in the model's dtype, clipped to the range each one had in training."""
        Xc = np.maximum(X, self._scaler_min, dtype=self.dtype)
        return np.minimum(Xc, self._clip_hi, out=Xc)

    def _encode_clipped(self, Xc: Array) -> Array:
        h = Xc
        for W, b in self._encoder:
            h = h @ W
            h += b
            h = self._act(h)
        return h

    def _network_output(self, Z: Array) -> Array:
        # The raw linear output layer, as scikit-learn's predict gives it.
        decoder = self._decoder
        h = Z
        for i, (W, b) in enumerate(decoder):
            h = h @ W
            h += b
            if i != len(decoder) - 1:
                h = self._act(h)
        return h

    def _decode_scaled(self, Z: Array) -> Array:
        # Reconstructions stay within the range seen in training ([0, 1] in scaled units).
        return _clip01(self._network_output(Z))

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
        return self._encode_clipped(self._clip(X))

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
        X = self._decode_scaled(self._own(Z))
        return unscale_pixels(X, self._scaler_min, self._scaler_scale)

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
        out = self.forward(X, distances=False)
        return out.reconstruction, out.errors

    def forward(self, X: Array, distances: bool = True) -> Forward:
        """Latent codes, reconstructions and both outlier scores from one pass.

        Parameters
        ----------
        X : ndarray of shape (n, 64)
            Pixel values 0..16.
        distances : bool
            False: skip the distances (None).

        Returns
        -------
        Forward
            ``latent`` (n, 2) as :meth:`encode`; ``reconstruction`` (n, 64) and ``errors``
            (n,) as :meth:`reconstruct`; ``pixel_errors`` (n, 64), the squared error of each
            pixel in scaled units (``errors`` is their mean: where a vector is unlike what the
            model reconstructs, Alibi Detect's ``feature_score``); ``distances`` (n,), the mean
            squared distance in scaled units to the nearest prototype (typical training digits),
            None if the artifact has none.
        """
        lo, scale = self._scaler_min, self._scaler_scale
        Xc = self._clip(X)
        Z = self._encode_clipped(Xc)
        Ys = self._decode_scaled(Z)
        Xs = Xc - lo  # the scaled input, for the errors: (clip(x, lo, hi) - lo) * s
        Xs *= scale
        d = self._distances(Xs) if distances and self._prototypes is not None else None
        Xs -= Ys
        np.square(Xs, out=Xs)
        errors = np.mean(Xs, axis=-1)
        return Forward(Z, unscale_pixels(Ys, lo, scale), errors, Xs, d)

    def _distances(self, Xs: Array) -> Array:
        assert self._prototypes is not None
        minus_2pt, squares = self._prototypes
        if Xs.shape[-2] <= _DISTANCE_ROWS:  # one block: the usual request, and stacked ones
            D = Xs @ minus_2pt
            D += squares
            d = D.min(axis=-1)
        else:
            # In blocks of rows: a (rows, k) block of squared distances stays in the cache,
            # where one (n, k) matrix for 10 000 rows (10 MB) made the pass five times as costly.
            d = np.empty(len(Xs), dtype=Xs.dtype)
            for start in range(0, len(Xs), _DISTANCE_ROWS):
                D = Xs[start : start + _DISTANCE_ROWS] @ minus_2pt
                D += squares
                D.min(axis=1, out=d[start : start + _DISTANCE_ROWS])
        d += np.einsum("...j,...j->...", Xs, Xs)
        d *= 1.0 / Xs.shape[-1]
        # Rounding can leave -0.0000001 for a prototype itself.
        return cast(Array, np.maximum(d, 0.0, out=d))

    def is_outlier(self, errors: Array, distances: Array) -> NDArray[np.bool_]:
        """Whether each vector is an outlier: its error or its distance above its threshold.

        Parameters
        ----------
        errors, distances : ndarray of shape (n,)
            From :meth:`forward`.

        Returns
        -------
        ndarray of bool, shape (n,)
        """
        assert self.threshold is not None and self.distance_threshold is not None
        flags = errors > self.threshold
        flags |= distances > self.distance_threshold
        return flags
