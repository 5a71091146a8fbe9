"""The figures of ``make bench-peers``: medians over rounds, ratios, the JSON and the README block.

:func:`report_dict` is what is written as JSON (``docs/performance/peers.json``);
:func:`markdown` turns that JSON, and only that, into the README's block, which
:func:`rewrite_readme` puts between ``<!-- peers:start -->`` and ``<!-- peers:end -->``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import Measurement

__all__ = [
    "END_MARKER",
    "PEERS",
    "SERVICE",
    "START_MARKER",
    "ServerRounds",
    "markdown",
    "ratios",
    "replace_block",
    "report_dict",
    "rewrite_readme",
]

SERVICE = "digitcode"
PEERS = ("mlflow", "bentoml", "litserve")
START_MARKER = "<!-- peers:start -->"
END_MARKER = "<!-- peers:end -->"


@dataclass
class ServerRounds:
    """One server's start-up and memory over the rounds.

    Attributes
    ----------
    startup_s : list of float
        Seconds from spawning it to the first 200 on its health route, per round.
    largest_rss_mb, total_rss_mb : list of float
        After its runs, per round: ``VmRSS`` of its largest process (the worker that runs the
        model) and of all its processes together.
    processes : list of dict
        Its processes after the last round (pid, command, rss_mb).
    """

    startup_s: list[float] = field(default_factory=list)
    largest_rss_mb: list[float] = field(default_factory=list)
    total_rss_mb: list[float] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        startups = sorted(self.startup_s)
        return {
            "startup_s": startups[(len(startups) - 1) // 2] if startups else None,
            "startup_rounds_s": self.startup_s,
            "largest_rss_mb": max(self.largest_rss_mb, default=None),
            "total_rss_mb": max(self.total_rss_mb, default=None),
            "processes": self.processes,
        }


def ratios(runs: Sequence[Measurement], workloads: Sequence[str]) -> list[dict[str, Any]]:
    """digitcode's vectors/s over the best peer's, per workload (median runs, valid ones only).

    ``ratio`` is None when digitcode's run is not valid or no peer has a valid run.
    """
    rows = []
    for workload in workloads:
        ours = next((r for r in runs if r.server == SERVICE and r.workload == workload), None)
        peers = [r for r in runs if r.server != SERVICE and r.workload == workload and r.valid]
        best = max(peers, key=lambda r: r.vectors_per_s, default=None)
        ratio = None
        if ours is not None and ours.valid and best is not None and best.vectors_per_s > 0:
            ratio = ours.vectors_per_s / best.vectors_per_s
        rows.append(
            {
                "workload": workload,
                "digitcode_vectors_per_s": ours.vectors_per_s if ours and ours.valid else None,
                "best_peer": best.server if best else None,
                "best_peer_vectors_per_s": best.vectors_per_s if best else None,
                "ratio": ratio,
            }
        )
    return rows


def report_dict(
    meta: dict[str, Any],
    runs: Sequence[Measurement],
    servers: dict[str, ServerRounds],
    workloads: Sequence[str],
    problems: Sequence[str],
) -> dict[str, Any]:
    """Everything measured, as JSON-ready data (``runs`` are the median rounds)."""
    return {
        "meta": meta,
        "workloads": list(workloads),
        "runs": [run.as_dict() for run in runs],
        "servers": {name: figures.as_dict() for name, figures in servers.items()},
        "ratios": ratios(runs, workloads),
        "problems": list(problems),
        "valid": not problems,
    }


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _spread(rounds: Sequence[float], median: float) -> str:
    if len(rounds) < 2 or not median:
        return ""
    return f"{100 * (max(rounds) - min(rounds)) / median:.0f}%"


def _order(server: str) -> int:
    return ([SERVICE, *PEERS].index(server)) if server in (SERVICE, *PEERS) else 99


def _runs_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| workload | server | req/s | vectors/s | p50 ms | p99 ms | non-2xx / socket errors "
        "| spread |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in report["workloads"]:
        runs = sorted(
            (r for r in report["runs"] if r["workload"] == workload),
            key=lambda r: _order(r["server"]),
        )
        for run in runs:
            name = f"**{run['server']}**" if run["server"] == SERVICE else run["server"]
            wrk = run["wrk"]
            if wrk is None:
                lines.append(f"| {workload} | {name} | – | – | – | – | not run: {run['note']} | |")
                continue
            errors = f"{wrk['non2xx']} / {wrk['socket_errors']}"
            if not run["valid"]:
                errors += " (**invalid**)"
            lines.append(
                f"| {workload} | {name} | {_number(wrk['requests_per_s'], 1)} "
                f"| {_number(run['vectors_per_s'])} | {wrk['latency_p50_us'] / 1000:.2f} "
                f"| {wrk['latency_p99_us'] / 1000:.2f} | {errors} "
                f"| {_spread(run['rounds_vectors_per_s'], run['vectors_per_s'])} |"
            )
    return lines


def _ratios_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| workload | digitcode vectors/s | best peer | its vectors/s | digitcode ÷ best peer |",
        "|---|---:|---|---:|---:|",
    ]
    for row in report["ratios"]:
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        lines.append(
            f"| {row['workload']} | {_number(row['digitcode_vectors_per_s'])} "
            f"| {row['best_peer'] or '–'} | {_number(row['best_peer_vectors_per_s'])} "
            f"| {ratio} |"
        )
    return lines


def _servers_table(report: dict[str, Any]) -> list[str]:
    versions = report["meta"].get("versions", {})
    lines = [
        "| server | version | start-up s | processes | largest process RSS MB "
        "| all processes RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in sorted(report["servers"], key=_order):
        figures = report["servers"][name]
        startup = figures["startup_s"]
        lines.append(
            f"| {name} | {versions.get(name, '')} "
            f"| {'–' if startup is None else f'{startup:.2f}'} | {len(figures['processes'])} "
            f"| {_number(figures['largest_rss_mb'], 1)} | {_number(figures['total_rss_mb'], 1)} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The README block (without its markers) from a saved report."""
    meta = report["meta"]
    packages = ", ".join(f"{k} {v}" for k, v in meta.get("packages", {}).items())
    pinning = (
        f"server on CPU {meta['server_cpus']}, wrk on CPU {meta['wrk_cpus']}"
        if meta.get("server_cpus") is not None
        else "no CPU pinning"
    )
    intro = (
        f"Measured {meta['date']} on commit {meta['git']}, on {meta['cpus']} × "
        f"{meta['cpu_model']} ({pinning}, one wrk thread); {meta['rounds']} rounds of "
        f"{meta['duration_s']:g} s after {meta['warmup_s']:g} s of warm-up, each figure the "
        "median round (`spread`: the range of the rounds). Python "
        f"{meta['python']}; {packages}. Generated from `docs/performance/peers.json` by "
        "`python -m benchmarks.peers --no-run --json docs/performance/peers.json "
        "--readme README.md`."
    )
    lines = [
        textwrap.fill(intro, width=100, break_long_words=False, break_on_hyphens=False),
        "",
        *_runs_table(report),
        "",
        *_ratios_table(report),
        "",
        *_servers_table(report),
    ]
    if report["problems"]:
        lines += ["", "Problems in this run:", ""]
        lines += [f"- {problem.splitlines()[0]}" for problem in report["problems"]]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the two markers replaced by ``block``.

    Raises
    ------
    ValueError
        If the markers are missing, repeated or out of order.
    """
    if text.count(START_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise ValueError(f"expected one {START_MARKER} and one {END_MARKER}")
    head, _, rest = text.partition(START_MARKER)
    _, _, tail = rest.partition(END_MARKER)
    if END_MARKER not in rest:
        raise ValueError(f"{END_MARKER} comes before {START_MARKER}")
    return f"{head}{START_MARKER}\n{block}\n{END_MARKER}{tail}"


def rewrite_readme(readme: Path, report: dict[str, Any]) -> None:
    """Put :func:`markdown` of ``report`` between the markers of ``readme``."""
    readme.write_text(
        replace_block(readme.read_text(encoding="utf-8"), markdown(report)), encoding="utf-8"
    )
