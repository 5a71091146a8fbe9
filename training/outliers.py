"""How well the reconstruction error finds what users call anomalies, against baselines.

Three kinds of anomaly, all made from ``optdigits.tes`` (writers no model or threshold saw):

* corrupted test digits (:data:`CORRUPTIONS`): pixel noise, half blanked, shifted, flipped,
  rotated, inverted;
* novelty: for each digit k, detectors fitted without any k score the test k's against the
  other test digits;
* uniform noise vectors.

Every detector is fitted on the training split of ``optdigits.tra`` and gets its threshold from
its scores on the validation split by the served rule (:func:`service.artifact.calibration`: the
95 %-confidence upper bound of the 0.99 quantile), so its detection rate is comparable with the
served one. The test file is scored only here, never used to choose anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

from service.artifact import PIXEL_MAX, calibration
from service.model import Autoencoder, scale_pixels

__all__ = [
    "CORRUPTIONS",
    "QUANTILES",
    "Detector",
    "baseline_detectors",
    "evaluate_outliers",
    "novelty",
]

Array = NDArray[np.float64]
Labels = NDArray[np.int64]
Score = Callable[[Array], Array]  # pixel rows (n, 64) -> anomaly scores (n,), higher = stranger
QUANTILES = ("0.9", "0.95", "0.99")  # the false-positive table's nominal levels
SERVED = "0.99"  # DIGITCODE_OUTLIER_QUANTILE's default


def _images(X: Array) -> Array:
    return X.reshape(-1, 8, 8)


def _shift(X: Array, axis: int, k: int) -> Array:
    """Move each 8x8 digit by ``k`` pixels along ``axis`` (1: down, 2: right), zeros in."""
    img, out = _images(X), np.zeros_like(_images(X))
    src, dst = [slice(None)] * 3, [slice(None)] * 3
    src[axis], dst[axis] = slice(None, -k), slice(k, None)
    out[tuple(dst)] = img[tuple(src)]
    return out.reshape(-1, 64)


def _noise(sigma: float) -> Callable[[Array, np.random.Generator], Array]:
    return lambda X, rng: np.clip(X + rng.normal(0.0, sigma, X.shape), 0.0, PIXEL_MAX)


def _blank_left(X: Array, rng: np.random.Generator) -> Array:
    out = _images(X).copy()
    out[:, :, :4] = 0.0
    return out.reshape(-1, 64)


CORRUPTIONS: dict[str, Callable[[Array, np.random.Generator], Array]] = {
    "Gaussian noise σ=2": _noise(2.0),
    "Gaussian noise σ=4": _noise(4.0),
    "left half blanked": _blank_left,
    "shifted 1 px right": lambda X, rng: _shift(X, 2, 1),
    "shifted 2 px right": lambda X, rng: _shift(X, 2, 2),
    "shifted 2 px down": lambda X, rng: _shift(X, 1, 2),
    "flipped left-right": lambda X, rng: _images(X)[:, :, ::-1].reshape(-1, 64),
    "rotated 90°": lambda X, rng: np.rot90(_images(X), 1, axes=(1, 2)).reshape(-1, 64),
    "inverted (16 − x)": lambda X, rng: PIXEL_MAX - X,
}


def _or_inf(threshold: float | None) -> float:
    """A threshold, or infinity (nothing flagged) where too few rows could not bound it."""
    return float("inf") if threshold is None else float(threshold)


@dataclass
class Detector:
    """Fitted anomaly scores, each with its thresholds (by the served rule, from validation
    scores): a vector is flagged when any of its scores is above its threshold.

    ``scores(X)`` maps pixel rows (n, 64) to (n, m) scores, higher = stranger;
    ``thresholds[j]`` holds score j's thresholds by nominal quantile.
    """

    name: str
    scores: Callable[[Array], Array]
    thresholds: list[dict[str, float | None]]

    @classmethod
    def calibrated(cls, name: str, score: Score, X_val: Array) -> Detector:
        """One score, its thresholds from its values on ``X_val`` (n, 64)."""
        return cls(name, lambda X: score(X)[:, None], [calibration(score(X_val))["thresholds"]])

    def flagged(self, S: Array, quantile: str = SERVED) -> NDArray[np.bool_]:
        """Which rows of the scores ``S`` (n, m) are outliers at ``quantile``'s thresholds."""
        limits = np.array([_or_inf(t[quantile]) for t in self.thresholds])
        return np.asarray(np.any(limits < S, axis=1))

    def anomaly(self, X: Array) -> Array:
        """One score per row (n,) for AUCs: each score over its served threshold, the largest
        (so above 1 exactly when flagged)."""
        limits = np.array([_or_inf(t[SERVED]) for t in self.thresholds])
        return np.asarray(np.max(self.scores(X) / limits, axis=1))


def baseline_detectors(model: Autoencoder, X_fit: Array, X_val: Array) -> list[Detector]:
    """The served detector, its two scores alone and the baselines, fitted on ``X_fit`` (n, 64)
    in the model's scaled units, their thresholds from ``X_val`` (the rows the model was
    calibrated on)."""
    art = model.artifact

    def scale(X: Array) -> Array:
        return scale_pixels(X, art.scaler_min, art.scaler_scale)

    S_fit = scale(X_fit)
    # The served detector's thresholds are the artifact's own (training calibrated them on its
    # validation split, by the same rule as the baselines get below).
    cal = art.manifest["calibration"]

    def served(X: Array) -> Array:
        f = model.forward(X)
        assert f.distances is not None
        return np.column_stack([f.errors, f.distances])

    detectors = [
        Detector(
            "served: error or distance", served, [cal["thresholds"], cal["distance"]["thresholds"]]
        ),
        Detector("autoencoder error alone", lambda X: served(X)[:, :1], [cal["thresholds"]]),
        Detector(
            "prototype distance alone", lambda X: served(X)[:, 1:], [cal["distance"]["thresholds"]]
        ),
    ]
    for k in (2, 5):
        pca = PCA(n_components=k, random_state=0).fit(S_fit)

        def pca_error(X: Array, pca: PCA = pca) -> Array:
            S = scale(X)
            return np.asarray(np.mean((pca.inverse_transform(pca.transform(S)) - S) ** 2, axis=1))

        detectors.append(Detector.calibrated(f"PCA-{k} error", pca_error, X_val))
    forest = IsolationForest(random_state=0).fit(S_fit)
    detectors.append(
        Detector.calibrated("IsolationForest", lambda X: -forest.score_samples(scale(X)), X_val)
    )
    lof = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(S_fit)
    detectors.append(
        Detector.calibrated("LOF (novelty)", lambda X: -lof.score_samples(scale(X)), X_val)
    )
    neighbours = NearestNeighbors(n_neighbors=5).fit(S_fit)
    detectors.append(
        Detector.calibrated(
            "5th-nearest training digit",
            lambda X: neighbours.kneighbors(scale(X))[0][:, -1],
            X_val,
        )
    )
    return detectors


def _auc(normal: Array, anomalous: Array) -> float:
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    return float(roc_auc_score(labels, np.r_[normal, anomalous]))


def evaluate_outliers(
    detectors: list[Detector], X_test: Array, noise: Array, seed: int = 0
) -> dict[str, Any]:
    """Each detector on the clean test digits, each corruption of them, and ``noise``.

    Returns
    -------
    dict
        ``false_positives``: detector → nominal quantile → share of clean test digits flagged;
        ``sets``: set name → detector → ``{"auc", "detected"}`` (AUC against the clean test
        digits; share flagged at the detector's 0.99 thresholds).
    """
    rng = np.random.default_rng(seed)
    anomalies = {name: make(X_test, rng) for name, make in CORRUPTIONS.items()}
    anomalies["uniform noise"] = noise
    false_positives: dict[str, dict[str, float | None]] = {}
    sets: dict[str, dict[str, dict[str, float]]] = {name: {} for name in anomalies}
    for d in detectors:
        clean = d.scores(X_test)
        false_positives[d.name] = {
            q: None
            if any(t[q] is None for t in d.thresholds)
            else float(np.mean(d.flagged(clean, q)))
            for q in QUANTILES
        }
        clean_anomaly = d.anomaly(X_test)
        for name, rows in anomalies.items():
            scores = d.scores(rows)
            sets[name][d.name] = {
                "auc": _auc(clean_anomaly, d.anomaly(rows)),
                "detected": float(np.mean(d.flagged(scores))),
            }
    return {"false_positives": false_positives, "sets": sets}


def novelty(
    fit_detectors: Callable[[Array, Labels], list[Detector]],
    X_train: Array,
    y_train: Labels,
    X_test: Array,
    y_test: Labels,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """For each digit k: detectors fitted without k score the test k's against the others.

    ``fit_detectors(X, y)`` fits every detector on rows of the training file (it splits off
    its own validation rows). Returns detector → ``{"mean_auc", "worst_auc", "worst_digit"}``.
    """
    aucs: dict[str, dict[int, float]] = {}
    for k in sorted(set(y_train.tolist())):
        keep = y_train != k
        for d in fit_detectors(X_train[keep], y_train[keep]):
            aucs.setdefault(d.name, {})[k] = _auc(
                d.anomaly(X_test[y_test != k]), d.anomaly(X_test[y_test == k])
            )
        if progress is not None:
            progress(k)
    out: dict[str, dict[str, float]] = {}
    for name, by_digit in aucs.items():
        worst = min(by_digit, key=by_digit.__getitem__)
        out[name] = {
            "mean_auc": float(np.mean(list(by_digit.values()))),
            "worst_auc": by_digit[worst],
            "worst_digit": float(worst),
        }
    return out
