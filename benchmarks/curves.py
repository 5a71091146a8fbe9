"""Cost curves: what a request costs as it grows, and what a worker gives as clients are added.

Two sweeps against one server each, after the rounds of :mod:`benchmarks.run`, with the same
pinning and answer checks:

``rows``
    The service (default settings) on ``/encode`` and ``/reconstruct``, JSON and float32
    ``.npy`` bodies of 1 to 10 000 rows, 4 connections: vectors/s and p99 latency against rows
    per request.
``connections``
    The service and the no-op app, one-vector JSON ``/encode``, 1 to 64 connections (the
    service's default ``DIGITCODE_MAX_CONCURRENCY`` is 64): requests/s and p99 against
    connections.

:func:`plot_curves` draws both as PNG pictures (matplotlib, headless).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from benchmarks.answers import (
    JSON_TYPE,
    NPY_TYPE,
    Answers,
    check_answers,
    fetch_json_answers,
    fetch_npy_answers,
    json_body,
    npy_body,
)
from benchmarks.wrk import WrkResult, write_wrk_script

__all__ = [
    "CONNECTIONS",
    "ROWS",
    "CurvePoint",
    "check_curve_answers",
    "plot_curves",
    "write_row_bodies",
]

ROWS = (1, 10, 100, 1000, 10_000)
CONNECTIONS = (1, 2, 4, 8, 16, 32, 64)
ROW_CONNECTIONS = 4
FORMATS = {"JSON": JSON_TYPE, ".npy": NPY_TYPE}
PATHS = ("/encode", "/reconstruct")


@dataclass(frozen=True)
class CurvePoint:
    """One timed wrk run of a sweep.

    Attributes
    ----------
    sweep : {"rows", "connections"}
    server : str
    path : str
    body_format : {"JSON", ".npy"}
    rows, connections : int
        Rows per request and wrk connections.
    result : WrkResult
    """

    sweep: str
    server: str
    path: str
    body_format: str
    rows: int
    connections: int
    result: WrkResult

    @property
    def vectors_per_s(self) -> float:
        return self.result.requests_per_s * self.rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "server": self.server,
            "path": self.path,
            "format": self.body_format,
            "rows": self.rows,
            "connections": self.connections,
            "requests_per_s": self.result.requests_per_s,
            "vectors_per_s": self.vectors_per_s,
            "latency_p50_ms": self.result.latency_p50_us / 1000,
            "latency_p99_ms": self.result.latency_p99_us / 1000,
            "valid": self.result.valid,
        }


def write_row_bodies(
    workdir: Path, rows: NDArray[np.float64]
) -> dict[tuple[str, str, int], tuple[Path, bytes]]:
    """The rows sweep's wrk scripts and bodies, by (path, format, rows)."""
    scripts: dict[tuple[str, str, int], tuple[Path, bytes]] = {}
    for n in ROWS:
        for name, media in FORMATS.items():
            body = json_body(rows[:n]) if media == JSON_TYPE else npy_body(rows[:n], np.float32)
            suffix = "json" if media == JSON_TYPE else "npy"
            body_file = workdir / f"curve-{n}.{suffix}"
            body_file.write_bytes(body)
            for path in PATHS:
                script = workdir / f"curve{path.replace('/', '-')}-{n}-{suffix}.lua"
                scripts[(path, name, n)] = (write_wrk_script(script, body_file, media), body)
    return scripts


def check_curve_answers(
    client: httpx.Client, rows: NDArray[np.float64], reference: Callable[[NDArray[Any]], Answers]
) -> None:
    """Check the service's answers to every body of the rows sweep (raises on a mismatch)."""
    for n in ROWS:
        X = rows[:n]
        check_answers(reference(X), fetch_json_answers(client, json_body(X)), label=f"JSON {n}")
        npy = fetch_npy_answers(client, npy_body(X, np.float32), np.float32)
        check_answers(reference(X), npy, label=f".npy {n}")


def plot_curves(points: Sequence[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """Draw ``rows.png`` and ``connections.png`` into ``out`` from saved points.

    Parameters
    ----------
    points : sequence of dict
        :meth:`CurvePoint.as_dict` of every valid run.
    out : Path
        Directory for the pictures.
    title : str
        Said under each picture's title (the commit and machine).

    Returns
    -------
    list of Path
        The pictures written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    rows = [p for p in points if p["sweep"] == "rows" and p["valid"]]
    fig, (speed, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for path in PATHS:
        for name in FORMATS:
            line = sorted((p for p in rows if (p["path"], p["format"]) == (path, name)),
                          key=lambda p: p["rows"])  # fmt: skip
            if not line:
                continue
            style = "-" if name == ".npy" else "--"
            label = f"{path} {name}"
            xs = [p["rows"] for p in line]
            speed.plot(xs, [p["vectors_per_s"] for p in line], style, marker="o", label=label)
            latency.plot(xs, [p["latency_p99_ms"] for p in line], style, marker="o", label=label)
    for axes, what in ((speed, "vectors/s"), (latency, "p99 latency, ms")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel(f"rows per request ({ROW_CONNECTIONS} connections)")
        axes.set_ylabel(what)
        axes.grid(True, which="both", alpha=0.3)
    speed.legend()
    fig.suptitle(f"digitcode, one worker: cost against rows per request\n{title}", fontsize=10)
    fig.tight_layout()
    written.append(out / "rows.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    conns = [p for p in points if p["sweep"] == "connections" and p["valid"]]
    fig, (speed, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in sorted({p["server"] for p in conns}):
        line = sorted((p for p in conns if p["server"] == server), key=lambda p: p["connections"])
        xs = [p["connections"] for p in line]
        speed.plot(xs, [p["requests_per_s"] for p in line], marker="o", label=server)
        latency.plot(xs, [p["latency_p99_ms"] for p in line], marker="o", label=server)
    for axes, what in ((speed, "requests/s"), (latency, "p99 latency, ms")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrent connections (one-vector JSON /encode)")
        axes.set_ylabel(what)
        axes.grid(True, which="both", alpha=0.3)
    speed.set_ylim(bottom=0)
    latency.set_yscale("log")
    speed.legend()
    fig.suptitle(f"One worker: requests/s against connections\n{title}", fontsize=10)
    fig.tight_layout()
    written.append(out / "connections.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
