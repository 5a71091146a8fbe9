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


# Requests of more rows are computed in blocks of this many: a block's (rows, 128) hidden
# layer (512 KB in float32) stays in a core's L2 cache, where a 10 000-row one (5 MB) does not.
# Measured on 2 cores (512 KB L2 each), median of 60: a 10 000-row float32 encode 12.9 -> 9.8 ms,
# forward 49.9 -> 38.6 ms; blocks of 512 or 2048 rows did as well, 256 or 4096 worse. Stacked
# requests (see Autoencoder) are never split: each has at most this many rows.
_BLOCK_ROWS = 1024


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

# Logistic and tanh written as a(x) = alpha * s(k * x) + gamma with s(u) = 1 / (1 + exp(u)):
# (k, alpha, gamma). Inside a chain of layers, k goes into the weights of the layer before and
# alpha, gamma into those of the layer after, so a hidden layer costs exp, add and reciprocal
# in place: a fifth less than np.tanh for a float32 encode of 1 000 rows (a seventh for a
# reconstruct), the negation pass fewer for logistic. Three numpy calls instead of one cost
# more than that below about 20 rows, so requests of fewer than _FOLD_ROWS rows take the
# activations as they are. The two agree to float32 rounding (1e-6 on a latent code), as a
# row computed alone already does with the same row in a batch (BLAS takes other paths); the
# choice depends on the rows per request only, so stacked requests still get the same bits.
# Only the latent code, an answer itself, always takes the activation as is.
_SIGMOID_FORMS: dict[str, tuple[float, float, float]] = {
    "logistic": (-1.0, 1.0, 0.0),
    "tanh": (-2.0, 2.0, -1.0),
}
_FOLD_ROWS = 32


def _sigmoid_core(x: Array) -> Array:
    np.exp(x, out=x)
    x += 1.0
    return np.reciprocal(x, out=x)


def _clamped_sigmoid_core(limit: float) -> Callable[[Array], Array]:
    """``_sigmoid_core`` for inputs that may overflow ``exp``: above ``limit``, s(u) is 0 to
    the dtype's precision, and clamping keeps numpy from warning about the overflow."""

    def core(x: Array) -> Array:
        return _sigmoid_core(np.minimum(x, limit, out=x))

    return core


Step = Callable[[Array], Array]
Layer = tuple[Array, Array, Step]  # h -> step(h @ W + b), step in place


def _chain(
    layers: list[tuple[Array, Array]],
    activation: str,
    activate_last: bool,
    input_range: tuple[Array, Array] | None,
    dtype: np.dtype[Any],
    fold: bool,
) -> list[Layer]:
    """Layers ready to run; with ``fold``, the activations folded into the weights where they
    can be.

    Parameters
    ----------
    layers : list of (W, b), W of shape (n_in, n_out), b of shape (n_out,), float64
        Consecutive layers; every output but the last is activated.
    activation : str
        The hidden activation, a key of ``_ACTIVATIONS``.
    activate_last : bool
        Whether the last layer's output is activated too (else it is linear).
    input_range : (low, high), arrays of shape (n_in,) or None
        The range of each input of the chain, None if unbounded: it decides where ``exp``
        could overflow, so that its input must be clamped.
    dtype : dtype
        The dtype the layers are stored and run in.
    fold : bool
        Whether to fold logistic and tanh into the weights (the form for many rows).
    """
    act = _ACTIVATIONS[activation]
    form = _SIGMOID_FORMS.get(activation) if fold else None
    limit = float(np.log(np.finfo(dtype).max)) - 1.0
    out: list[Layer] = []
    bounds = input_range
    for i, (W, b) in enumerate(layers):
        step: Step
        if form is not None and i > 0:  # its input is alpha * s + gamma
            W, b = form[1] * W, b + form[2] * W.sum(axis=0)
        if i == len(layers) - 1:
            step = act if activate_last else _identity
        elif form is None:
            step = act
        else:
            W, b = form[0] * W, form[0] * b
            # The largest value the layer's output can take, for inputs within their range.
            highest = np.inf
            if bounds is not None:
                low, high = (x[:, None] for x in bounds)
                highest = (b + np.maximum(low * W, high * W).sum(axis=0)).max()
            step = _sigmoid_core if highest < limit else _clamped_sigmoid_core(limit)
            bounds = (np.zeros(len(b)), np.ones(len(b)))  # s(u) is within [0, 1]
        out.append((cast(Array, W.astype(dtype)), cast(Array, b.astype(dtype)), step))
    return out


def _run(layers: list[Layer], h: Array) -> Array:
    for W, b, step in layers:
        h = h @ W
        h += b
        h = step(h)
    return h


def _in_blocks(fn: Callable[[Array], tuple[Array | None, ...]], X: Array) -> list[Array | None]:
    """``fn(X)`` for ``X`` of shape (n, d), computed in blocks of ``_BLOCK_ROWS`` rows.

    Parameters
    ----------
    fn : callable
        Takes rows of shape (m, d) and gives arrays of shape (m, ...), or None, for them alone.
    X : ndarray of shape (n, d)

    Returns
    -------
    list of ndarray of shape (n, ...) or None
        ``fn``'s results for every block, stacked in place (None where ``fn`` gave None).
    """
    out: list[Array | None] = []
    for start in range(0, len(X), _BLOCK_ROWS):
        part = fn(X[start : start + _BLOCK_ROWS])
        if not out:
            out = [None if p is None else np.empty((len(X), *p.shape[1:]), p.dtype) for p in part]
        for whole, p in zip(out, part, strict=True):
            if whole is not None and p is not None:
                whole[start : start + len(p)] = p
    return out


def _many(X: Array) -> bool:
    """Whether ``X`` is one request of more than ``_BLOCK_ROWS`` rows, to compute in blocks."""
    return X.ndim == 2 and X.shape[0] > _BLOCK_ROWS


def _first(results: list[Array | None]) -> Array:
    assert results[0] is not None
    return results[0]


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
        k = artifact.latent_layer
        layers = [
            (W.astype(np.float64), b.astype(np.float64))
            for W, b in zip(artifact.weights, artifact.biases, strict=True)
        ]
        self._scaler_min = cast(Array, artifact.scaler_min.astype(self.dtype))
        self._scaler_scale = cast(Array, artifact.scaler_scale.astype(self.dtype))
        # The scaler folded into the first layer, computed in float64 then stored in the
        # model's dtype: clip((x - lo) * s, 0, 1) @ W + b equals clip(x, lo, hi) @ (s * W) +
        # (b - (lo * s) @ W) with hi = lo + 1 / s. Clipping the raw pixels to the training
        # range replaces four passes over the input with two (a fifth of a 10 000-row encode)
        # and three numpy calls fewer per request.
        lo, scale = artifact.scaler_min, artifact.scaler_scale
        W0, b0 = layers[0]
        layers[0] = (scale[:, None] * W0, b0 - (lo * scale) @ W0)
        hi = lo + 1.0 / scale
        self._clip_hi = cast(Array, hi.astype(self.dtype))
        act, dtype = artifact.activation, self.dtype
        # The encoder takes clipped raw pixels, not scaled ones; the decoder any latent code.
        # For few rows and for many (see _FOLD_ROWS).
        self._encoders = tuple(
            _chain(layers[:k], act, True, (lo, hi), dtype, f) for f in (False, True)
        )
        self._decoders = tuple(
            _chain(layers[k:], act, False, None, dtype, f) for f in (False, True)
        )

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
        return _run(self._encoders[Xc.shape[-2] >= _FOLD_ROWS], Xc)

    def _network_output(self, Z: Array) -> Array:
        # The raw linear output layer, as scikit-learn's predict gives it.
        return _run(self._decoders[Z.shape[-2] >= _FOLD_ROWS], Z)

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
        if _many(X):
            return _first(_in_blocks(lambda x: (self.encode(x),), X))
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
        if _many(Z):
            return _first(_in_blocks(lambda z: (self.decode(z),), Z))
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
        if _many(X):
            return Forward._make(_in_blocks(lambda x: self.forward(x, distances), X))
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
        # At most _BLOCK_ROWS rows (forward's blocks): the (rows, k) squared distances stay in
        # the cache, where one matrix for 10 000 rows (10 MB) made the pass five times as costly.
        D = Xs @ minus_2pt
        D += squares
        d = D.min(axis=-1)
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
