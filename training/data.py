"""Reading the UCI optdigits files and fitting the pixel scaler."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from service.artifact import N_FEATURES, PIXEL_MAX

__all__ = [
    "DATA_DIR",
    "OPTDIGITS_SHA256",
    "DataError",
    "fit_minmax",
    "load_optdigits",
    "portable_path",
    "split_train_validation",
]


# The UCI files, committed in data/ with their provenance (data/README.md).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
OPTDIGITS_SHA256 = {
    "optdigits.tra": "e1b683cc211604fe8fd8c4417e6a69f31380e0c61d4af22e93cc21e9257ffedd",
    "optdigits.tes": "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8",
}


class DataError(ValueError):
    """A data file is missing or not in the optdigits format."""


def _check_sha256(path: Path) -> None:
    expected = OPTDIGITS_SHA256.get(path.name)
    if expected is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise DataError(
            f"{path}: sha256 {digest[:12]}… is not the UCI file's {expected[:12]}… "
            "(changed or corrupted; see data/README.md)"
        )


def load_optdigits(path: Path | str) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Read an optdigits file.

    Parameters
    ----------
    path : path
        A file of comma-separated integer rows: 64 pixels in 0..16, then the label 0..9. A
        file named ``optdigits.tra`` or ``optdigits.tes`` must be the UCI file (sha256).

    Returns
    -------
    X : ndarray of shape (n, 64)
        Pixel values as float64.
    y : ndarray of shape (n,)
        Digit labels.
    """
    path = Path(path)
    try:
        _check_sha256(path)
        data = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a comma-separated numeric file ({exc})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: no rows")
    if data.shape[1] != N_FEATURES + 1:
        raise DataError(
            f"{path}: expected {N_FEATURES + 1} columns (64 pixels + label), got {data.shape[1]}"
        )
    X, labels = data[:, :N_FEATURES], data[:, N_FEATURES]
    if np.any(X < 0) or np.any(X > PIXEL_MAX) or np.any(np.round(X) != X):
        raise DataError(f"{path}: pixel values must be integers in 0..16")
    if np.any(labels != np.round(labels)) or np.any((labels < 0) | (labels > 9)):
        raise DataError(f"{path}: labels must be integers in 0..9")
    return X, labels.astype(np.int64)


def fit_minmax(X: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fit a min-max scaler to [0, 1].

    Parameters
    ----------
    X : ndarray of shape (n, 64)
        Training rows.

    Returns
    -------
    scaler_min, scaler_scale : ndarray of shape (64,)
        ``(X - scaler_min) * scaler_scale`` maps the training range onto [0, 1]. Pixels that are
        constant in training get scale 1 instead of dividing by zero.
    """
    lo = X.min(axis=0)
    span = X.max(axis=0) - lo
    scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0)
    return lo.astype(np.float64), scale.astype(np.float64)


def split_train_validation(
    X: NDArray[np.float64], y: NDArray[np.int64], fraction: float, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """The stratified, shuffled hold-out split used by training and evaluation alike.

    Returns
    -------
    X_fit : ndarray of shape (n - n_val, 64)
    X_val : ndarray of shape (n_val, 64)
    y_fit, y_val : ndarray of shape (n - n_val,) and (n_val,)
    """
    from sklearn.model_selection import train_test_split

    X_fit, X_val, y_fit, y_val = train_test_split(
        X, y, test_size=fraction, stratify=y, shuffle=True, random_state=seed
    )
    return X_fit, X_val, y_fit, y_val


def portable_path(path: Path | str, cwd: Path | str | None = None) -> str:
    """A path fit for a manifest or report: one that names the same file when run again.

    A path inside the current directory (``cwd``, default :func:`Path.cwd`) is recorded relative
    to it, however it was given (``/work/repo/models/x`` and ``./models/x`` both give
    ``models/x``), so a command recorded in a checkout rebuilds in any other checkout without
    naming this machine's directories. A path outside it is recorded as given: shortening it to
    its name would name a different file.
    """
    path = Path(path)
    base = Path(os.path.abspath(Path.cwd() if cwd is None else cwd))
    absolute = Path(os.path.abspath(base / path))
    # Lexically first (keeps symlinks inside the tree as written), then with symlinks resolved.
    for candidate, root in ((absolute, base), (absolute.resolve(), base.resolve())):
        if candidate.is_relative_to(root):
            return candidate.relative_to(root).as_posix()
    return path.as_posix()
