"""Train the digit autoencoder and write a model artifact.

Usage::

    python -m training.train --train ../shared/data/optdigits.tra --out models/default
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from numpy.typing import NDArray
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from tqdm import tqdm

from service.artifact import Artifact, ArtifactError, save_artifact, sha256_file
from service.model import Autoencoder, scale_pixels
from training.data import DataError, fit_minmax, load_optdigits
from training.plot import plot_latent

__all__ = ["PRESETS", "Preset", "TrainResult", "main", "mlp_to_artifact", "train_autoencoder"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Preset:
    """Network shape and optimiser settings for one kind of model."""

    hidden_layer_sizes: tuple[int, ...]
    activation: str
    epochs: int
    learning_rate_init: float = 1e-3
    batch_size: int = 64
    alpha: float = 1e-6
    patience: int = 50
    description: str = ""


PRESETS: dict[str, Preset] = {
    "default": Preset(
        hidden_layer_sizes=(128, 32, 2, 32, 128),
        activation="tanh",
        epochs=400,
        description="deep tanh autoencoder with a 2-D bottleneck",
    ),
    "seed": Preset(
        hidden_layer_sizes=(2,),
        activation="logistic",
        epochs=900,
        learning_rate_init=1e-2,
        batch_size=32,
        patience=100,
        description="the original homework's 64-2-64 sigmoid net, trained correctly",
    ),
}


@dataclass
class TrainResult:
    """A trained network and its history.

    Attributes
    ----------
    mlp : MLPRegressor
        Holds the weights of the epoch with the best validation loss.
    best_epoch : int
        1-based epoch whose weights were kept.
    history : list of (train_mse, val_mse)
        Per-epoch MSE in scaled units.
    """

    mlp: MLPRegressor
    best_epoch: int
    history: list[tuple[float, float]] = field(default_factory=list)

    @property
    def best_val_mse(self) -> float:
        return self.history[self.best_epoch - 1][1]


def _mse(mlp: MLPRegressor, Xs: Array) -> float:
    return float(np.mean((mlp.predict(Xs) - Xs) ** 2))


def train_autoencoder(
    Xs_train: Array,
    Xs_val: Array,
    preset: Preset,
    seed: int,
    epochs: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fit an ``MLPRegressor`` autoencoder X→X epoch by epoch, keeping the best on validation.

    Parameters
    ----------
    Xs_train : ndarray of shape (n_train, 64)
        Training rows in scaled [0, 1] units.
    Xs_val : ndarray of shape (n_val, 64)
        Validation rows in scaled units; used for early stopping and model selection only.
    preset : Preset
        Network shape and optimiser settings.
    seed : int
        Seeds weight initialisation and per-epoch shuffling.
    epochs : int, optional
        Maximum number of epochs (default: the preset's).
    progress : bool
        Show a progress bar with train/validation loss.
    """
    mlp = MLPRegressor(
        hidden_layer_sizes=preset.hidden_layer_sizes,
        activation=preset.activation,
        solver="adam",
        alpha=preset.alpha,
        batch_size=preset.batch_size,
        learning_rate_init=preset.learning_rate_init,
        shuffle=True,
        random_state=seed,
    )
    n_epochs = preset.epochs if epochs is None else epochs
    history: list[tuple[float, float]] = []
    best: tuple[float, int, Any, Any] | None = None
    bar = tqdm(range(n_epochs), desc="training", unit="epoch", disable=not progress, leave=True)
    for epoch in bar:
        mlp.partial_fit(Xs_train, Xs_train)
        train_mse, val_mse = _mse(mlp, Xs_train), _mse(mlp, Xs_val)
        history.append((train_mse, val_mse))
        if best is None or val_mse < best[0]:
            best = (val_mse, epoch + 1, copy.deepcopy(mlp.coefs_), copy.deepcopy(mlp.intercepts_))
        bar.set_postfix(train=f"{train_mse:.4f}", val=f"{val_mse:.4f}", best=f"{best[0]:.4f}")
        if epoch + 1 - best[1] >= preset.patience:
            break
    bar.close()
    assert best is not None, "epochs must be at least 1"
    mlp.coefs_, mlp.intercepts_ = best[2], best[3]
    return TrainResult(mlp=mlp, best_epoch=best[1], history=history)


def mlp_to_artifact(
    mlp: MLPRegressor, scaler_min: Array, scaler_scale: Array, manifest: dict[str, Any]
) -> Artifact:
    """Package a fitted autoencoder ``MLPRegressor`` and its scaler as an artifact.

    The latent layer is the 2-unit hidden layer nearest the middle.
    """
    sizes = [mlp.coefs_[0].shape[0]] + [w.shape[1] for w in mlp.coefs_]
    two_unit = [i for i in range(1, len(sizes) - 1) if sizes[i] == 2]
    if not two_unit:
        raise ValueError(f"network {sizes} has no 2-unit hidden layer")
    latent = min(two_unit, key=lambda i: abs(i - (len(sizes) - 1) / 2))
    return Artifact(
        scaler_min=scaler_min,
        scaler_scale=scaler_scale,
        weights=[np.asarray(w, dtype=np.float64) for w in mlp.coefs_],
        biases=[np.asarray(b, dtype=np.float64) for b in mlp.intercepts_],
        manifest={**manifest, "activation": mlp.activation, "latent_layer": latent},
    )


def pca_mse(Xs_train: Array, Xs_eval: Array, n_components: int = 2) -> float:
    """Reconstruction MSE of PCA fitted on ``Xs_train``, measured on ``Xs_eval`` (scaled units)."""
    pca = PCA(n_components=n_components).fit(Xs_train)
    return float(np.mean((pca.inverse_transform(pca.transform(Xs_eval)) - Xs_eval) ** 2))


def _portable(path: Path) -> str:
    # Record how to rebuild without leaking this machine's directory layout.
    return path.name if path.is_absolute() else path.as_posix()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="digitcode-train", description="Train the digit autoencoder and write an artifact."
    )
    p.add_argument("--train", required=True, type=Path, help="optdigits training file (.tra)")
    p.add_argument("--out", required=True, type=Path, help="artifact directory to (re)write")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: preset's)")
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.15,
        help="share of rows held out, stratified by digit (default 0.15)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        print("digitcode-train: --epochs must be at least 1", file=sys.stderr)
        return 2
    if not 0.0 < args.validation_fraction < 1.0:
        print("digitcode-train: --validation-fraction must be between 0 and 1", file=sys.stderr)
        return 2
    try:
        X, y = load_optdigits(args.train)
    except DataError as exc:
        print(f"digitcode-train: {exc}", file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    X_tr, X_val, _, y_val = train_test_split(
        X, y, test_size=args.validation_fraction, stratify=y, shuffle=True, random_state=args.seed
    )
    scaler_min, scaler_scale = fit_minmax(X_tr)
    Xs_tr = scale_pixels(X_tr, scaler_min, scaler_scale)
    Xs_val = scale_pixels(X_val, scaler_min, scaler_scale)

    print(
        f"{args.preset}: 64-{'-'.join(map(str, preset.hidden_layer_sizes))}-64 "
        f"{preset.activation}, {len(X_tr)} training / {len(X_val)} validation rows"
    )
    started = time.perf_counter()
    result = train_autoencoder(Xs_tr, Xs_val, preset, args.seed, args.epochs, not args.no_progress)
    seconds = time.perf_counter() - started
    pca2 = pca_mse(Xs_tr, Xs_val)

    rebuild = (
        f"python -m training.train --train {_portable(args.train)} --out {_portable(args.out)} "
        f"--preset {args.preset} --seed {args.seed}"
        + (f" --epochs {args.epochs}" if args.epochs is not None else "")
        + (
            f" --validation-fraction {args.validation_fraction}"
            if args.validation_fraction != 0.15
            else ""
        )
    )
    manifest = {
        "preset": args.preset,
        "seed": args.seed,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rebuild_command": rebuild,
        "training": {
            "data_file": args.train.name,
            "data_sha256": sha256_file(args.train),
            "rows_total": len(X),
            "rows_train": len(X_tr),
            "rows_validation": len(X_val),
            "validation_fraction": args.validation_fraction,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "batch_size": preset.batch_size,
            "learning_rate_init": preset.learning_rate_init,
            "alpha": preset.alpha,
        },
        "metrics": {
            "validation_mse": result.best_val_mse,
            "validation_mse_pca2": pca2,
            "train_seconds": round(seconds, 2),
        },
        "library_versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
        },
    }
    artifact = mlp_to_artifact(result.mlp, scaler_min, scaler_scale, manifest)
    Z_val = Autoencoder(artifact).encode(X_val)
    title = f"digitcode {args.preset}: 2-D latent of {len(X_val)} validation digits"
    try:
        written = save_artifact(
            args.out, artifact, {"latent.png": lambda path: plot_latent(Z_val, y_val, path, title)}
        )
    except (OSError, ArtifactError) as exc:
        print(f"digitcode-train: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(
        f"validation MSE (scaled units): {result.best_val_mse:.5f} "
        f"(best epoch {result.best_epoch} of {len(result.history)})"
    )
    print(f"PCA-2 validation MSE:          {pca2:.5f}")
    print(f"training time:                 {seconds:.1f} s")
    print(f"artifact:                      {args.out} (model version {written['model_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
