"""Figures: the 2-D latent space coloured by digit."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

__all__ = ["plot_digit_pairs", "plot_error_histogram", "plot_latent", "plot_per_digit"]


def plot_latent(
    Z: NDArray[np.float64], y: NDArray[np.int64], path: Path | str, title: str = "2-D latent"
) -> None:
    """Scatter the 2-D latent codes, one colour per digit, with a legend.

    Parameters
    ----------
    Z : ndarray of shape (n, 2)
        Latent codes.
    y : ndarray of shape (n,)
        Digit labels 0..9.
    path : path
        PNG file to write.
    """
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    cmap = plt.get_cmap("tab10")
    for digit in range(10):
        sel = y == digit
        if np.any(sel):
            ax.scatter(Z[sel, 0], Z[sel, 1], s=8, alpha=0.7, color=cmap(digit), label=str(digit))
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title)
    ax.legend(title="digit", markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_digit_pairs(
    X: NDArray[np.float64],
    X_hat: NDArray[np.float64],
    errors: NDArray[np.float64],
    captions: list[str],
    path: Path | str,
) -> None:
    """Digits beside their reconstructions, as 8×8 images, two pairs per row.

    Parameters
    ----------
    X, X_hat : ndarray of shape (n, 64)
        Originals and reconstructions in pixel units.
    errors : ndarray of shape (n,)
        Reconstruction error of each pair, shown in its caption.
    captions : list of str
        A word per pair (e.g. "best", "worst").
    """
    n = len(X)
    rows = (n + 1) // 2
    fig, axes = plt.subplots(rows, 4, figsize=(6, 1.6 * rows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        left, right = axes[i // 2, 2 * (i % 2)], axes[i // 2, 2 * (i % 2) + 1]
        left.imshow(X[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
        right.imshow(X_hat[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
        left.set_title(f"{captions[i]} {errors[i]:.3f}", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_per_digit(per_digit: dict[int, float], path: Path | str) -> None:
    """Bar chart of the mean reconstruction error per digit."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    digits = sorted(per_digit)
    ax.bar([str(d) for d in digits], [per_digit[d] for d in digits], color="tab:blue")
    ax.set_xlabel("digit")
    ax.set_ylabel("mean squared error (scaled units)")
    ax.set_title("Test reconstruction error per digit")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_error_histogram(
    digit_errors: NDArray[np.float64],
    noise_errors: NDArray[np.float64],
    auc: float,
    path: Path | str,
) -> None:
    """Histograms of per-vector errors of real digits and of random noise (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    low = max(min(digit_errors.min(), noise_errors.min()), 1e-5)
    high = max(digit_errors.max(), noise_errors.max())
    bins = np.geomspace(low, high, 50).tolist()
    ax.hist(digit_errors, bins=bins, alpha=0.7, label="test digits")
    ax.hist(noise_errors, bins=bins, alpha=0.7, label="random noise")
    ax.set_xscale("log")
    ax.set_xlabel("reconstruction error (scaled units)")
    ax.set_ylabel("vectors")
    ax.set_title(f"Reconstruction error as an anomaly score (AUC {auc:.3f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
