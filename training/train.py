"""Train the digit autoencoder and write a model artifact.

Usage::

    python -m training.train --train data/optdigits.tra --out models/default
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing import Manager
from pathlib import Path
from queue import Empty
from typing import Any, NamedTuple

import numpy as np
import sklearn
from joblib import Parallel, delayed
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neural_network import MLPRegressor
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from service.artifact import (
    Artifact,
    ArtifactError,
    Reference,
    calibration,
    load_artifact,
    save_artifact,
    sha256_file,
)
from service.model import Autoencoder, scale_pixels
from training.data import (
    DataError,
    fit_minmax,
    load_optdigits,
    portable_path,
    split_train_validation,
)
from training.plot import plot_latent

__all__ = [
    "N_PROTOTYPES",
    "PRESETS",
    "Epoch",
    "Preset",
    "TrainResult",
    "Trained",
    "calibrated",
    "main",
    "mlp_to_artifact",
    "prototypes",
    "train_autoencoder",
    "train_preset",
    "train_seeds",
]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Preset:
    """Network shape and optimiser settings for one kind of model.

    ``lr_decay`` is the learning rate's final fraction: the Adam step size falls geometrically
    from ``learning_rate_init`` to ``learning_rate_init * lr_decay`` over ``epochs``. ``n_seeds``
    networks (seeds ``seed, seed + 1, ...``) are trained in parallel and the one with the best
    validation loss is kept. ``input_noise`` > 0 trains a denoising autoencoder: every epoch the
    inputs get fresh Gaussian noise of that standard deviation (scaled units) while the targets
    stay clean, which generalises better to unseen writers.
    """

    hidden_layer_sizes: tuple[int, ...]
    activation: str
    epochs: int
    learning_rate_init: float = 1e-3
    lr_decay: float = 1.0
    batch_size: int = 64
    alpha: float = 1e-6
    patience: int = 50
    n_seeds: int = 1
    float32: bool = False
    input_noise: float = 0.0
    description: str = ""


PRESETS: dict[str, Preset] = {
    # Chosen on the validation split only (see docs/evaluation): a denoising autoencoder with a
    # deeper decoder, two seeds trained in parallel, about 50 s on two cores.
    "default": Preset(
        hidden_layer_sizes=(128, 64, 2, 64, 128, 128, 128),
        activation="tanh",
        epochs=500,
        alpha=1e-2,
        batch_size=64,
        learning_rate_init=1e-3,
        patience=100,
        n_seeds=2,
        float32=True,
        input_noise=0.15,
        description="deep tanh denoising autoencoder with a 2-D bottleneck",
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


class Epoch(NamedTuple):
    """What one epoch of training measured, after the epoch.

    ``train_mse`` and ``val_mse`` are the same measure, the MSE of the clipped reconstruction of
    clean rows in scaled units (what the service reports): ``val_mse`` on all validation rows,
    ``train_mse`` on an evenly spaced sample of the training rows as large as the validation
    split (all of them if fewer), which costs as little as the validation figure. ``train_loss``
    is scikit-learn's objective: half the squared error on the (noisy) inputs averaged over the
    epoch's batches, plus the L2 penalty.
    """

    train_loss: float
    train_mse: float
    val_mse: float


@dataclass
class TrainResult:
    """A trained network and its history.

    Attributes
    ----------
    mlp : MLPRegressor
        Holds the weights of the epoch with the best validation loss.
    seed : int
        The seed that produced it.
    best_epoch : int
        1-based epoch whose weights were kept.
    history : list of Epoch
        One entry per epoch run.
    """

    mlp: MLPRegressor
    seed: int
    best_epoch: int
    history: list[Epoch] = field(default_factory=list)

    @property
    def best_val_mse(self) -> float:
        return self.history[self.best_epoch - 1].val_mse


def _reconstruction_mse(mlp: MLPRegressor, Xs: Array) -> float:
    return float(np.mean((np.clip(mlp.predict(Xs), 0.0, 1.0) - Xs) ** 2))


def train_autoencoder(
    Xs_train: Array,
    Xs_val: Array,
    preset: Preset,
    seed: int,
    epochs: int | None = None,
    report: Callable[[int, int, float, float, bool], None] | None = None,
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
    report : callable, optional
        Called after every epoch with ``(seed, epoch, train_mse, val_mse, stopping)`` (see
        :class:`Epoch`); ``stopping`` is true when this epoch is the last because
        ``preset.patience`` epochs have passed without a better validation MSE.
    """
    dtype = np.float32 if preset.float32 else np.float64
    X_fit: Array = Xs_train.astype(dtype)
    X_val: Array = Xs_val.astype(dtype)
    n_sample = min(len(X_fit), max(len(X_val), 1))
    X_fit_sample = X_fit[np.linspace(0, len(X_fit) - 1, n_sample).round().astype(np.intp)]
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
    history: list[Epoch] = []
    best: tuple[float, int, Any, Any] | None = None
    rng = np.random.default_rng(seed)
    for epoch in range(n_epochs):
        if epoch and hasattr(mlp, "_optimizer"):
            # scikit-learn has no schedule for Adam; its optimiser reads this on every step.
            mlp._optimizer.learning_rate_init = preset.learning_rate_init * (
                preset.lr_decay ** (epoch / max(n_epochs - 1, 1))
            )
        X_in = X_fit
        if preset.input_noise > 0:
            noise: Array = rng.normal(0.0, preset.input_noise, X_fit.shape).astype(dtype)
            X_in = np.clip(X_fit + noise, 0.0, 1.0)
        mlp.partial_fit(X_in, X_fit)
        val_mse = _reconstruction_mse(mlp, X_val)
        train_mse = _reconstruction_mse(mlp, X_fit_sample)
        history.append(Epoch(float(mlp.loss_), train_mse, val_mse))
        if best is None or val_mse < best[0]:
            best = (val_mse, epoch + 1, copy.deepcopy(mlp.coefs_), copy.deepcopy(mlp.intercepts_))
        stopping = epoch + 1 < n_epochs and epoch + 1 - best[1] >= preset.patience
        if report is not None:
            report(seed, epoch + 1, train_mse, val_mse, stopping)
        if stopping:
            break
    assert best is not None, "epochs must be at least 1"
    mlp.coefs_, mlp.intercepts_ = best[2], best[3]
    return TrainResult(mlp=mlp, seed=seed, best_epoch=best[1], history=history)


def _train_one(
    Xs_train: Array, Xs_val: Array, preset: Preset, seed: int, epochs: int | None, queue: Any
) -> TrainResult:
    # One BLAS thread per worker: the seeds themselves are the parallelism.
    with threadpool_limits(limits=1):
        return train_autoencoder(
            Xs_train, Xs_val, preset, seed, epochs, lambda *update: queue.put(update)
        )


# One bar per seed, which fits in 80 columns:
# "seed 0:  37%|███▌      | 185/500 epochs [00:12<00:21, MSE train 0.0211 val 0.0240]",
# and once a network has stopped early:
# "seed 1: 312/500 epochs, stopped early [00:21, MSE train 0.0251 val 0.0262]".
_BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}<{remaining}{postfix}]"
)
_STOPPED_FORMAT = "{desc}: {n_fmt}/{total_fmt} epochs, stopped early [{elapsed}{postfix}]"


def train_seeds(
    Xs_train: Array,
    Xs_val: Array,
    preset: Preset,
    seed: int,
    epochs: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``preset.n_seeds`` networks in parallel (joblib) and keep the best on validation.

    With ``progress``, one bar per seed counts that network's epochs (out of ``epochs``) and
    shows its latest train and validation MSE (see :class:`Epoch`). A network that stops early
    (``preset.patience`` epochs without a better validation MSE) keeps its count and says so:
    ``seed 1: 312/500 epochs, stopped early [00:21, MSE train 0.0251 val 0.0262]``.
    """
    seeds = [seed + i for i in range(preset.n_seeds)]
    n_epochs = preset.epochs if epochs is None else epochs
    bars = {
        s: tqdm(
            total=n_epochs,
            desc=f"seed {s}",
            position=i,
            bar_format=_BAR_FORMAT,
            disable=not progress,
        )
        for i, s in enumerate(seeds)
    }

    def show(s: int, epoch: int, train_mse: float, val_mse: float, stopping: bool) -> None:
        bar = bars[s]
        bar.set_postfix_str(f"MSE train {train_mse:.4f} val {val_mse:.4f}", refresh=False)
        if stopping:
            bar.bar_format = _STOPPED_FORMAT
        bar.update(epoch - bar.n)
        if stopping:
            bar.close()  # drawn now, with its own time, while the other seeds may run on

    try:
        if len(seeds) == 1:
            results = [train_autoencoder(Xs_train, Xs_val, preset, seed, epochs, show)]
        else:
            results = _parallel(Xs_train, Xs_val, preset, seeds, epochs, show)
    finally:
        for bar in bars.values():
            bar.close()
    return min(results, key=lambda r: (r.best_val_mse, r.seed))


def _parallel(
    Xs_train: Array,
    Xs_val: Array,
    preset: Preset,
    seeds: list[int],
    epochs: int | None,
    show: Callable[[int, int, float, float, bool], None],
) -> list[TrainResult]:
    with Manager() as manager:
        queue = manager.Queue()
        results: list[TrainResult] = []

        def run() -> None:
            results.extend(
                Parallel(n_jobs=min(len(seeds), os.cpu_count() or 1))(
                    delayed(_train_one)(Xs_train, Xs_val, preset, s, epochs, queue) for s in seeds
                )
            )

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        while worker.is_alive() or not queue.empty():
            try:
                show(*queue.get(timeout=0.1))
            except Empty:
                continue
        worker.join()
    if len(results) != len(seeds):
        raise RuntimeError("a training worker failed")
    return results


def mlp_to_artifact(
    mlp: MLPRegressor,
    scaler_min: Array,
    scaler_scale: Array,
    manifest: dict[str, Any],
    X_fit: Array,
    X_calibration: Array,
    y_calibration: NDArray[np.int64],
    seed: int = 0,
) -> Artifact:
    """Package a fitted autoencoder ``MLPRegressor`` and its scaler as an artifact.

    The latent layer is the 2-unit hidden layer nearest the middle. The layers keep the
    dtype they were trained in (float32 or float64), which is the one the service computes in.
    The prototypes come from ``X_fit`` (n, 64), the rows the network was fitted on, the
    outlier calibration and the reference sample from ``X_calibration`` (m, 64) and its labels
    ``y_calibration`` (m,), rows it was not fitted on (the validation split): see
    :func:`calibrated`.
    """
    sizes = [mlp.coefs_[0].shape[0]] + [w.shape[1] for w in mlp.coefs_]
    two_unit = [i for i in range(1, len(sizes) - 1) if sizes[i] == 2]
    if not two_unit:
        raise ValueError(f"network {sizes} has no 2-unit hidden layer")
    latent = min(two_unit, key=lambda i: abs(i - (len(sizes) - 1) / 2))
    artifact = Artifact(
        scaler_min=scaler_min,
        scaler_scale=scaler_scale,
        weights=[np.array(w) for w in mlp.coefs_],
        biases=[np.array(b) for b in mlp.intercepts_],
        manifest={**manifest, "activation": mlp.activation, "latent_layer": latent},
    )
    return calibrated(artifact, X_fit, X_calibration, y_calibration, seed)


# Typical training digits the service measures each vector's distance to (k-means centres).
# Chosen on the validation split: the fewest of 64, 128, 256 and 512 that flag at least 95 % of
# the validation digits shifted two pixels in each direction, at thresholds calibrated on the
# same (unshifted) rows: 256 flag 99.3/97.2/100/100 % (down, up, right, left); 128 flag 86.6 %
# of those shifted up, 64 88.2 %. The cost is 22 % of a reconstruction's arithmetic.
N_PROTOTYPES = 256


def prototypes(artifact: Artifact, X_fit: Array, seed: int = 0) -> NDArray[Any]:
    """K-means centres of ``X_fit`` (n, 64) in scaled units, (k, 64) in the model's dtype."""
    Xs = scale_pixels(X_fit, artifact.scaler_min, artifact.scaler_scale)
    k = min(N_PROTOTYPES, len(Xs))
    # One thread: the same rows give the same centres on every machine.
    with threadpool_limits(1):
        kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(Xs)
    return np.asarray(kmeans.cluster_centers_, dtype=artifact.dtype)


def calibrated(
    artifact: Artifact,
    X_fit: Array,
    X_calibration: Array,
    y_calibration: NDArray[np.int64],
    seed: int = 0,
) -> Artifact:
    """``artifact`` with prototypes of ``X_fit`` (n, 64), the outlier calibration of its
    errors and distances on ``X_calibration`` (m, 64), rows the network was not fitted on, and
    those rows with their labels ``y_calibration`` (m,) as its reference sample."""
    artifact = replace(
        artifact,
        prototypes=prototypes(artifact, X_fit, seed),
        reference=Reference.of(X_calibration, y_calibration),
    )
    with threadpool_limits(1):  # BLAS rounding depends on its threads: the same on any machine
        scores = Autoencoder(artifact).forward(X_calibration)
    manifest = {**artifact.manifest, "calibration": calibration(scores.errors, scores.distances)}
    return replace(artifact, manifest=manifest)


def pca_mse(Xs_train: Array, Xs_eval: Array, n_components: int = 2) -> float:
    """Reconstruction MSE of PCA fitted on ``Xs_train``, measured on ``Xs_eval`` (scaled units)."""
    pca = PCA(n_components=n_components).fit(Xs_train)
    return float(np.mean((pca.inverse_transform(pca.transform(Xs_eval)) - Xs_eval) ** 2))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train the digit autoencoder and write an artifact.",
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


@dataclass
class Trained:
    """Everything one training run produced: the artifact and what the report needs."""

    artifact: Artifact
    result: TrainResult
    seconds: float
    X_val: Array
    y_val: NDArray[np.int64]
    pca2_val_mse: float
    val_mse: float


def train_preset(
    X: Array,
    y: NDArray[np.int64],
    preset_name: str,
    seed: int,
    epochs: int | None = None,
    validation_fraction: float = 0.15,
    progress: bool = False,
    provenance: dict[str, Any] | None = None,
) -> Trained:
    """Split, scale, train a preset and package the best network as an artifact.

    Parameters
    ----------
    X : ndarray of shape (n, 64)
        All rows of the training file (pixel units); the scaler is fitted on them.
    y : ndarray of shape (n,)
        Labels, for the stratified validation split and the plot.
    preset_name : str
        A key of :data:`PRESETS`.
    seed : int
        Seeds the split, the weights and the shuffling.
    provenance : dict, optional
        Extra manifest fields (data file, rebuild command).
    """
    preset = PRESETS[preset_name]
    X_fit, X_val, _, y_val = split_train_validation(X, y, validation_fraction, seed)
    scaler_min, scaler_scale = fit_minmax(X)
    Xs_fit = scale_pixels(X_fit, scaler_min, scaler_scale)
    Xs_val = scale_pixels(X_val, scaler_min, scaler_scale)
    started = time.perf_counter()
    result = train_seeds(Xs_fit, Xs_val, preset, seed, epochs, progress)
    seconds = time.perf_counter() - started
    pca2 = pca_mse(Xs_fit, Xs_val)
    provenance = provenance or {}
    manifest = {
        "preset": preset_name,
        "seed": seed,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **provenance,
        "training": {
            **provenance.get("training", {}),
            "rows_total": len(X),
            "rows_train": len(X_fit),
            "rows_validation": len(X_val),
            "validation_fraction": validation_fraction,
            "split_seed": seed,
            "seeds_tried": preset.n_seeds,
            "chosen_seed": result.seed,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "batch_size": preset.batch_size,
            "learning_rate_init": preset.learning_rate_init,
            "lr_decay": preset.lr_decay,
            "alpha": preset.alpha,
            "input_noise": preset.input_noise,
            "float32": preset.float32,
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
    artifact = mlp_to_artifact(
        result.mlp, scaler_min, scaler_scale, manifest, X_fit, X_val, y_val, seed
    )
    # Report what the service will compute (numpy, in the model's own precision) on the
    # validation rows, not the training loop's figure.
    served_val_mse = float(np.mean(Autoencoder(artifact).reconstruct(X_val)[1]))
    artifact.manifest["metrics"]["validation_mse"] = served_val_mse
    return Trained(artifact, result, seconds, X_val, y_val, pca2, served_val_mse)


# Manifest fields that differ between two runs that build the same model.
_RUN_FIELDS = ("created_at", ("metrics", "train_seconds"))


def _without_run_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(manifest))  # a deep copy, as JSON reads back
    for name in _RUN_FIELDS:
        if isinstance(name, tuple):
            section, key = name
            if isinstance(out.get(section), dict):
                out[section].pop(key, None)
        else:
            out.pop(name, None)
    return out


def _existing_if_unchanged(out_dir: Path, artifact: Artifact) -> dict[str, Any] | None:
    """The manifest of the artifact already in ``out_dir`` if writing ``artifact`` changes nothing.

    That is: the existing artifact is valid (:func:`load_artifact`) and has its latent plot,
    its weights file is byte-identical to the one ``artifact`` would write (same sha256), and
    every manifest field is equal except those that record the run rather than the model
    (``created_at``, ``metrics.train_seconds``). Otherwise ``None``. Keeping the existing
    artifact then keeps ``created_at`` meaning when this model was first built, which is what
    the model repository orders versions by.
    """
    try:
        existing = load_artifact(out_dir).manifest
        if not (out_dir / "latent.png").is_file():
            return None
        with tempfile.TemporaryDirectory(prefix="digitcode-train-") as tmp:
            candidate = save_artifact(Path(tmp) / "model", artifact)
    except (OSError, ArtifactError):
        return None
    same = _without_run_fields(existing) == _without_run_fields(candidate)
    return existing if same else None


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
    rebuild = (
        f"python -m training.train --train {shlex.quote(portable_path(args.train))} "
        f"--out {shlex.quote(portable_path(args.out))} --preset {args.preset} --seed {args.seed}"
        + (f" --epochs {args.epochs}" if args.epochs is not None else "")
        + (
            f" --validation-fraction {args.validation_fraction}"
            if args.validation_fraction != 0.15
            else ""
        )
    )
    provenance = {
        "rebuild_command": rebuild,
        "training": {"data_file": args.train.name, "data_sha256": sha256_file(args.train)},
    }
    n_val = math.ceil(len(X) * args.validation_fraction)  # as train_test_split counts
    seeds = [str(args.seed + i) for i in range(preset.n_seeds)]
    print(
        f"{args.preset}: 64-{'-'.join(map(str, preset.hidden_layer_sizes))}-64 "
        f"{preset.activation}, {len(X) - n_val} training / {n_val} validation rows; "
        + (f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(seeds)} in parallel")
        + f", up to {args.epochs or preset.epochs} epochs"
        + (" each, the best on validation kept" if len(seeds) > 1 else "")
    )
    trained = train_preset(
        X, y, args.preset, args.seed, args.epochs, args.validation_fraction,
        not args.no_progress, provenance,
    )  # fmt: skip
    result = trained.result
    Z_val = Autoencoder(trained.artifact).encode(trained.X_val)
    title = f"digitcode {args.preset}: 2-D latent of {len(Z_val)} validation digits"
    kept = _existing_if_unchanged(args.out, trained.artifact)
    if kept is None:
        try:
            written = save_artifact(
                args.out,
                trained.artifact,
                {"latent.png": lambda path: plot_latent(Z_val, trained.y_val, path, title)},
            )
        except (OSError, ArtifactError) as exc:
            print(f"digitcode-train: cannot write {args.out}: {exc}", file=sys.stderr)
            return 1
    print(
        f"validation MSE (scaled units): {trained.val_mse:.5f} "
        f"(seed {result.seed}, best epoch {result.best_epoch} of {len(result.history)})"
    )
    print(f"PCA-2 validation MSE:          {trained.pca2_val_mse:.5f}")
    print(f"training time:                 {trained.seconds:.1f} s")
    if kept is None:
        print(
            f"artifact:                      {args.out} (model version {written['model_version']})"
        )
    else:
        print(
            f"artifact:                      {args.out} unchanged (model version "
            f"{kept['model_version']}: the same weights and metadata as the artifact already "
            f"there, kept with its created_at {kept.get('created_at', '?')})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
