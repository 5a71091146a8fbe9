"""Evaluate a model on held-out writers and write a Markdown report with figures.

Usage::

    python -m training.evaluate --model models/default \\
        --train data/optdigits.tra --test data/optdigits.tes \\
        --out docs/evaluation

Every number is in the scaled [0, 1] units of the model's own scaler (fitted on the training
file). The test file is only ever scored here; training and model selection never see it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

from service.artifact import ArtifactError
from service.model import Autoencoder, scale_pixels
from training.data import DataError, load_optdigits, portable_path, split_train_validation
from training.outliers import (
    QUANTILES,
    SERVED,
    Detector,
    baseline_detectors,
    evaluate_outliers,
    novelty,
)
from training.plot import plot_digit_pairs, plot_error_histogram, plot_latent, plot_per_digit

__all__ = ["Row", "evaluate_models", "knn_accuracy", "main", "noise_vectors", "parameter_count"]

Array = NDArray[np.float64]
Labels = NDArray[np.int64]
KNN_NEIGHBOURS = 5


@dataclass
class Row:
    """One line of the headline table. ``None`` where a measure does not apply."""

    name: str
    test_mse: float
    validation_mse: float | None
    knn_accuracy: float | None
    knn_dims: int | None
    train_seconds: float | None
    parameters: int


def knn_accuracy(codes_fit: Array, y_fit: Labels, codes_score: Array, y_score: Labels) -> float:
    """Accuracy of a 5-nearest-neighbour classifier fitted on one set of codes, scored on another.

    Parameters
    ----------
    codes_fit : ndarray of shape (n, d)
    y_fit : ndarray of shape (n,)
    codes_score : ndarray of shape (m, d)
    y_score : ndarray of shape (m,)
    """
    knn = KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS).fit(codes_fit, y_fit)
    return float(knn.score(codes_score, y_score))


def parameter_count(model: Autoencoder) -> int:
    """Weights and biases of the network (the scaler not counted)."""
    art = model.artifact
    return int(sum(w.size for w in art.weights) + sum(b.size for b in art.biases))


def noise_vectors(n: int, seed: int = 0) -> Array:
    """Uniform random integer pixel vectors in 0..16: ``ndarray of shape (n, 64)``."""
    return np.random.default_rng(seed).integers(0, 17, size=(n, 64)).astype(np.float64)


def _mse(Xs: Array, Ys: Array) -> float:
    return float(np.mean((np.clip(Ys, 0.0, 1.0) - Xs) ** 2))


def evaluate_models(
    model: Autoencoder,
    X_train: Array,
    y_train: Labels,
    X_test: Array,
    y_test: Labels,
    validation_fraction: float,
    split_seed: int,
    seed_model: Autoencoder | None = None,
    seed_train_seconds: float | None = None,
) -> dict[str, Any]:
    """Compare the model with baselines on the test rows, and validation beside test.

    Parameters
    ----------
    model : Autoencoder
        The model under evaluation; its scaler defines the scaled units.
    X_train : ndarray of shape (n, 64)
        The whole training file; baselines are fitted on its training split.
    y_train : ndarray of shape (n,)
    X_test : ndarray of shape (m, 64)
    y_test : ndarray of shape (m,)
    validation_fraction, split_seed : float, int
        Recreate the model's validation split (from its manifest).
    seed_model : Autoencoder, optional
        The ``seed`` preset (64-2-64 sigmoid), reported as a row when given.

    Returns
    -------
    dict
        ``rows`` (list of :class:`Row`), ``per_digit`` (digit → mean test error), ``auc``,
        ``test_errors`` and ``noise_errors`` (ndarrays), ``homework_sse``.
    """
    art = model.artifact

    def scale(X: Array) -> Array:
        return scale_pixels(X, art.scaler_min, art.scaler_scale)

    X_fit, X_val, _, _ = split_train_validation(X_train, y_train, validation_fraction, split_seed)
    S_fit, S_val, S_test = scale(X_fit), scale(X_val), scale(X_test)
    rows: list[Row] = []

    mean = S_fit.mean(axis=0)
    rows.append(
        Row("mean only", _mse(S_test, mean + 0 * S_test), _mse(S_val, mean + 0 * S_val),
            None, None, 0.0, 64)
    )  # fmt: skip
    for k in (2, 5):
        started = time.perf_counter()
        pca = PCA(n_components=k, random_state=0).fit(S_fit)
        seconds = time.perf_counter() - started
        rows.append(
            Row(
                f"PCA-{k}",
                _mse(S_test, pca.inverse_transform(pca.transform(S_test))),
                _mse(S_val, pca.inverse_transform(pca.transform(S_val))),
                knn_accuracy(pca.transform(scale(X_train)), y_train, pca.transform(S_test), y_test),
                k,
                seconds,
                int(pca.components_.size + pca.mean_.size),
            )
        )

    def autoencoder_row(name: str, ae: Autoencoder, seconds: float | None) -> Row:
        _, test_err = ae.reconstruct(X_test)
        _, val_err = ae.reconstruct(X_val)
        return Row(
            name,
            float(test_err.mean()),
            float(val_err.mean()),
            knn_accuracy(ae.encode(X_train), y_train, ae.encode(X_test), y_test),
            2,
            seconds,
            parameter_count(ae),
        )

    homework_sse = None
    if seed_model is not None:
        rows.append(
            autoencoder_row("seed preset (64-2-64 sigmoid)", seed_model, seed_train_seconds)
        )
        _, train_err = seed_model.reconstruct(X_train)
        # The homework's measure: sum of squared errors / 2 over the whole training set.
        homework_sse = float(train_err.sum() * 64 / 2)
    seconds = art.manifest.get("metrics", {}).get("train_seconds")
    preset = art.manifest.get("preset", "model")
    rows.append(autoencoder_row(f"{preset} ({art.model_version})", model, seconds))

    _, test_errors = model.reconstruct(X_test)
    noise_errors = model.reconstruct(noise_vectors(len(X_test)))[1]
    labels = np.r_[np.zeros(len(test_errors)), np.ones(len(noise_errors))]
    auc = float(roc_auc_score(labels, np.r_[test_errors, noise_errors]))
    per_digit = {int(d): float(test_errors[y_test == d].mean()) for d in np.unique(y_test)}
    return {
        "rows": rows,
        "per_digit": per_digit,
        "auc": auc,
        "test_errors": test_errors,
        "noise_errors": noise_errors,
        "homework_sse": homework_sse,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def headline_table(rows: list[Row]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| model | test MSE | validation MSE | 5-NN accuracy (test) | training time | parameters |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        knn = "—" if r.knn_accuracy is None else f"{r.knn_accuracy:.3f} ({r.knn_dims}-D)"
        secs = _fmt(r.train_seconds, ".1f") + (" s" if r.train_seconds is not None else "")
        lines.append(
            f"| {r.name} | {r.test_mse:.4f} | {_fmt(r.validation_mse, '.4f')} | {knn} | "
            f"{secs} | {r.parameters:,} |"
        )
    return "\n".join(lines)


def outlier_tables(outliers: dict[str, Any]) -> str:
    """The outlier evaluation (see :mod:`training.outliers`) as Markdown."""
    detectors = list(outliers["false_positives"])
    fp_lines = [
        "| detector | "
        + " | ".join(f"flagged at {q} (nominal {1 - float(q):.0%})" for q in QUANTILES)
        + " |",
        "|---|" + "---:|" * len(QUANTILES),
    ]
    for name, rates in outliers["false_positives"].items():
        cells = ["—" if rates.get(q) is None else f"{rates[q]:.2%}" for q in QUANTILES]
        fp_lines.append(f"| {name} | " + " | ".join(cells) + " |")
    head = "| anomalies | " + " | ".join(detectors) + " |"
    set_lines = [head, "|---|" + "---:|" * len(detectors)]
    wins = []
    served = detectors[0]
    for set_name, by_detector in outliers["sets"].items():
        best = max(by_detector, key=lambda d: by_detector[d]["auc"])
        cells = []
        for d in detectors:
            r = by_detector[d]
            cell = f"{r['auc']:.3f} / {r['detected']:.0%}"
            cells.append(f"**{cell}**" if d == best else cell)
        set_lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
        if best != served and by_detector[best]["auc"] > by_detector[served]["auc"] + 0.005:
            wins.append(
                f"{set_name}: {best} ({by_detector[best]['auc']:.3f} against "
                f"{by_detector[served]['auc']:.3f})"
            )
    text = "\n".join(fp_lines) + "\n\nAUC against the clean test digits / share flagged at each "
    text += "detector's 0.99 threshold (best AUC in bold):\n\n" + "\n".join(set_lines)
    if outliers.get("novelty"):
        nov = ["| detector | mean AUC | worst AUC (digit) |", "|---|---:|---:|"]
        for name, r in outliers["novelty"].items():
            nov.append(
                f"| {name} | {r['mean_auc']:.3f} | {r['worst_auc']:.3f} ({int(r['worst_digit'])}) |"
            )
            if name != served:
                better = r["mean_auc"] > outliers["novelty"][served]["mean_auc"] + 0.005
                if better:
                    wins.append(f"novelty: {name} (mean AUC {r['mean_auc']:.3f})")
        text += (
            "\n\n**Novelty.** For each digit k, every detector is refitted (the autoencoder "
            "retrained with the same preset) on the training file without any k, and scores the "
            "test k's against the other test digits:\n\n" + "\n".join(nov)
        )
    text += "\n\n**Where a baseline wins** (AUC higher by more than 0.005): " + (
        "; ".join(wins) + "." if wins else "nowhere."
    )
    return text


def _report(
    result: dict[str, Any], model: Autoencoder, args: argparse.Namespace, figures: dict[str, str]
) -> str:
    manifest = model.manifest
    training = manifest.get("training", {})
    per_digit = "\n".join(f"| {d} | {e:.4f} |" for d, e in sorted(result["per_digit"].items()))
    thresholds = result["outliers"]["thresholds"]
    prototypes = model.artifact.prototypes
    n_prototypes = 0 if prototypes is None else len(prototypes)
    homework = ""
    if result["homework_sse"] is not None:
        homework = (
            "\n## The homework's error measure\n\n"
            "The original homework trained the 64-2-64 sigmoid net with a broken update rule "
            "and reported about 99,000 as its error (sum of squared errors / 2 over the training "
            "set) after 900 epochs. The `seed` preset, the same shape trained correctly with "
            "scikit-learn, reaches "
            f"**{result['homework_sse']:,.0f}** on the same measure over the "
            f"{training.get('rows_total', '?')} rows of `{Path(args.train).name}`, in scaled "
            "[0, 1] units (the homework's units were not recorded, so compare with care).\n"
        )
    return f"""# digitcode model evaluation

Model `{model.version}` (preset `{manifest.get("preset")}`, layers
{"-".join(map(str, manifest["layer_sizes"]))}, {manifest["activation"]}), evaluated on
`{Path(args.test).name}` — {len(result["test_errors"])} digits by 13 writers who are not in the
training file. Training, early stopping and every choice of architecture, learning rate, batch
size, regularisation, epochs and seed used only `{Path(args.train).name}` and its stratified
{training.get("validation_fraction", 0.15):.0%} validation split; the test file is scored here
and nowhere else. Errors are mean squared errors in the scaled [0, 1] units of the min-max
scaler fitted on the training file.

Reproduce: `{manifest.get("rebuild_command", "?")}`, then
`python -m training.evaluate --model {portable_path(args.model)}
--train {portable_path(args.train)} --test {portable_path(args.test)}`. How the preset was chosen
(validation numbers only): [tuning.md](tuning.md).

## Headline

{headline_table(result["rows"])}

5-NN accuracy: a 5-nearest-neighbour classifier fitted on the codes of the whole training file
and scored on the codes of the test file (PCA rows use their own 2 or 5 components).
Anomaly score: the AUC of `/reconstruct`'s error separating the {len(result["test_errors"])}
test digits from as many uniform random noise vectors is **{result["auc"]:.4f}**.

## Per-digit reconstruction error (test)

| digit | mean error |
|---|---:|
{per_digit}

![per-digit error]({figures["per_digit"]})

## Latent space of the test digits

![latent]({figures["latent"]})

## Reconstructions: best and worst test digits

Each pair: the test digit (left) and its reconstruction (right), with its error.

![reconstructions]({figures["pairs"]})

## Reconstruction error as an anomaly score

![errors of digits and noise]({figures["errors"]})

## Outliers: the served threshold, and detectors compared

The service scores each vector twice: its reconstruction error, and its distance to the nearest
of the model's {n_prototypes} prototypes (k-means centres of the training split, mean squared
difference per pixel in scaled units). It flags the vector as an outlier when either is above
its calibrated threshold (`DIGITCODE_OUTLIER_QUANTILE`, 0.99): the 95 %-confidence upper bound of
the 0.99 quantile of the validation rows' scores, here **{thresholds[0]:.4f}** for the error and
**{thresholds[1]:.4f}** for the distance. Each flags at most 1 % of digits like the validation
rows (with that confidence), so both together at most 2 %. Why two: the error alone misses most
digits shifted up or down (a 2-D code reconstructs a shifted digit about as well as many
unshifted ones), which the distance finds. Every baseline gets its threshold the same way from
its own validation scores; all are fitted on the training split only. The two scores alone are
shown too. Share of the clean test digits each flags, next to the nominal rate:

{outlier_tables(result["outliers"])}
{homework}"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a model on the test file; write a report.",
    )
    p.add_argument("--model", required=True, type=Path, help="artifact directory")
    p.add_argument("--train", required=True, type=Path, help="the training file (.tra)")
    p.add_argument("--test", required=True, type=Path, help="the held-out test file (.tes)")
    p.add_argument("--out", type=Path, default=Path("docs/evaluation"), help="report directory")
    p.add_argument(
        "--seed-model",
        type=Path,
        default=None,
        help="artifact of the seed preset to compare with (default: train it now)",
    )
    p.add_argument(
        "--novelty-preset",
        default="default",
        help="preset of the autoencoders retrained without each digit ('none': skip novelty)",
    )
    p.add_argument(
        "--novelty-epochs", type=int, default=None, help="their maximum epochs (default: preset's)"
    )
    return p


def _outliers(
    model: Autoencoder,
    X_train: Array,
    y_train: Labels,
    X_test: Array,
    y_test: Labels,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The outlier evaluation: served threshold, corruptions, noise and (unless skipped) novelty."""
    from training.train import train_preset

    training = model.manifest.get("training", {})
    fraction = float(training.get("validation_fraction", 0.15))
    seed = int(training.get("split_seed", model.manifest.get("seed", 0)))

    def fit(X: Array, y: Labels, ae: Autoencoder | None = None) -> list[Detector]:
        if ae is None:
            ae = Autoencoder(
                train_preset(
                    X, y, args.novelty_preset, seed, args.novelty_epochs, fraction
                ).artifact
            )
        X_fit, X_val, _, _ = split_train_validation(X, y, fraction, seed)
        return baseline_detectors(ae, X_fit, X_val)

    detectors = fit(X_train, y_train, model)
    out = evaluate_outliers(detectors, X_test, noise_vectors(len(X_test)))
    out["thresholds"] = [t[SERVED] for t in detectors[0].thresholds]
    if args.novelty_preset != "none":
        print(f"novelty: refitting every detector without each digit ({args.novelty_preset})")
        out["novelty"] = novelty(
            fit, X_train, y_train, X_test, y_test, lambda k: print(f"  without {k}: done")
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        model = Autoencoder.from_dir(args.model)
        X_train, y_train = load_optdigits(args.train)
        X_test, y_test = load_optdigits(args.test)
        seed_seconds = None
        if args.seed_model is not None:
            seed_model = Autoencoder.from_dir(args.seed_model)
            seed_seconds = seed_model.manifest.get("metrics", {}).get("train_seconds")
        else:
            from training.train import train_preset

            started = time.perf_counter()
            seed_model = Autoencoder(train_preset(X_train, y_train, "seed", seed=0).artifact)
            seed_seconds = time.perf_counter() - started
    except (ArtifactError, DataError) as exc:
        print(f"digitcode-evaluate: {exc}", file=sys.stderr)
        return 2
    training = model.manifest.get("training", {})
    result = evaluate_models(
        model,
        X_train,
        y_train,
        X_test,
        y_test,
        float(training.get("validation_fraction", 0.15)),
        int(training.get("split_seed", model.manifest.get("seed", 0))),
        seed_model,
        seed_seconds,
    )
    result["outliers"] = _outliers(model, X_train, y_train, X_test, y_test, args)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        "latent": "latent_test.png",
        "pairs": "reconstructions.png",
        "per_digit": "per_digit.png",
        "errors": "anomaly.png",
    }
    plot_latent(
        model.encode(X_test), y_test, args.out / figures["latent"],
        f"model {model.version}: 2-D latent of {len(X_test)} test digits",
    )  # fmt: skip
    order = np.argsort(result["test_errors"])
    picks = np.r_[order[:8], order[-8:]]
    plot_digit_pairs(
        X_test[picks],
        model.reconstruct(X_test[picks])[0],
        result["test_errors"][picks],
        ["best"] * 8 + ["worst"] * 8,
        args.out / figures["pairs"],
    )
    plot_per_digit(result["per_digit"], args.out / figures["per_digit"])
    plot_error_histogram(
        result["test_errors"], result["noise_errors"], result["auc"], args.out / figures["errors"]
    )
    (args.out / "README.md").write_text(_report(result, model, args, figures), encoding="utf-8")
    metrics = {
        "model_version": model.version,
        "rows": [asdict(r) for r in result["rows"]],
        "per_digit": result["per_digit"],
        "anomaly_auc": result["auc"],
        "homework_sse": result["homework_sse"],
        "outliers": result["outliers"],
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(headline_table(result["rows"]))
    print(f"anomaly AUC (test digits vs noise): {result['auc']:.4f}")
    if result["homework_sse"] is not None:
        sse = result["homework_sse"]
        print(f"seed preset, homework measure (SSE/2 over the training set): {sse:,.0f}")
    print(f"report: {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
