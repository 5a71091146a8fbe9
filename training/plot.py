"""Figures: the 2-D latent space coloured by digit."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

__all__ = ["plot_latent"]


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
