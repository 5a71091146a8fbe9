"""The benchmark's figures, its targets (met / NOT met) and the printed table.

A target is only "met" when every run it depends on is valid: completed requests, no socket
errors and no non-2xx answer. A missing run (e.g. the service does not speak ``.npy`` yet) or an
invalid one makes the target "NOT met" with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.wrk import WrkResult

__all__ = [
    "Measurement",
    "ServerFigures",
    "Target",
    "evaluate_targets",
    "format_report",
    "markdown_tables",
    "median_runs",
    "merge_figures",
    "picture_title",
    "readme_block",
    "report_dict",
    "update_readme",
]

NOOP = "noop"
BASELINE = "straightforward"
TYPED = "typed"
SERVICE = "digitcode"
SERVICE_NOLOG = "digitcode-nolog"  # the service without its access log, for information


@dataclass(frozen=True)
class Measurement:
    """One timed wrk run (or the reason there is none).

    Attributes
    ----------
    server, workload : str
        Which server and which workload (e.g. ``"encode-1000"``).
    vectors_per_request : int
    connections : int
    result : WrkResult or None
        None when the run could not be made; ``note`` says why.
    note : str
    rounds : tuple of float
        After :func:`median_runs`: the vectors/s of every round, in order.
    """

    server: str
    workload: str
    vectors_per_request: int
    connections: int
    result: WrkResult | None
    note: str = ""
    rounds: tuple[float, ...] = ()

    @property
    def valid(self) -> bool:
        return self.result is not None and self.result.valid

    @property
    def vectors_per_s(self) -> float:
        return self.result.requests_per_s * self.vectors_per_request if self.result else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "workload": self.workload,
            "vectors_per_request": self.vectors_per_request,
            "connections": self.connections,
            "vectors_per_s": self.vectors_per_s,
            "valid": self.valid,
            "note": self.note,
            "rounds_vectors_per_s": list(self.rounds),
            "wrk": self.result.as_dict() if self.result else None,
        }


@dataclass
class ServerFigures:
    """Start-up time and memory of one server (memory read after its last run of a round)."""

    startup_s: float
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """One target of the issue: a measured value against a goal."""

    name: str
    value: float | None
    goal: float
    unit: str
    higher_is_better: bool
    problem: str = ""
    # Shown for comparison only; not one of the targets.
    informational: bool = False

    @property
    def met(self) -> bool:
        if self.value is None or self.problem:
            return False
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    @property
    def status(self) -> str:
        if self.informational:
            return "info: " + ("would meet" if self.met else "would not meet")
        if self.met:
            return "met"
        return f"NOT met ({self.problem})" if self.problem else "NOT met"

    @property
    def goal_text(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {_number(self.goal)}{self.unit}"

    @property
    def value_text(self) -> str:
        return "-" if self.value is None else f"{_number(self.value)}{self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "goal": self.goal,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "met": self.met,
            "informational": self.informational,
            "status": self.status,
        }


def median_runs(runs: list[Measurement]) -> list[Measurement]:
    """One run per (server, workload): the round with the median vectors/s.

    The machine's load drifts between one server's run and the next; repeating every server
    in rounds and keeping each one's median keeps one unlucky run from deciding a ratio. A
    workload with an invalid run in any round is reported by that invalid run. With an even
    number of rounds the lower middle run is kept.
    """
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for run in runs:
        groups.setdefault((run.server, run.workload), []).append(run)
    chosen = []
    for group in groups.values():
        invalid = [run for run in group if not run.valid]
        if invalid:
            pick = invalid[0]
        else:
            ranked = sorted(group, key=lambda run: run.vectors_per_s)
            pick = ranked[(len(ranked) - 1) // 2]
        chosen.append(replace(pick, rounds=tuple(run.vectors_per_s for run in group)))
    return chosen


def merge_figures(rounds: list[ServerFigures]) -> ServerFigures:
    """One server's figures over rounds: median start-up, largest memory."""
    startups = sorted(fig.startup_s for fig in rounds)
    return ServerFigures(
        startup_s=startups[(len(startups) - 1) // 2],
        rss_mb=max(fig.rss_mb for fig in rounds),
        peak_rss_mb=max(fig.peak_rss_mb for fig in rounds),
        notes=[note for fig in rounds for note in fig.notes],
    )


def _spread(rounds: Sequence[float], median: float) -> str:
    """Range of the rounds around the median, in percent (how noisy this figure was)."""
    if len(rounds) < 2 or not median:
        return ""
    return f"{100 * (max(rounds) - min(rounds)) / median:.0f}%"


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _find(runs: list[Measurement], server: str, workload: str) -> Measurement | None:
    return next((m for m in runs if m.server == server and m.workload == workload), None)


def _problem(*runs: Measurement | None) -> str:
    for run in runs:
        if run is None:
            return "not measured"
        if run.result is None:
            return run.note or "missing"
        if not run.result.valid:
            return f"{run.server} {run.workload} run had errors"
    return ""


def _ratio_target(
    name: str, ours: Measurement | None, base: Measurement | None, goal: float, per: str
) -> Target:
    problem = _problem(ours, base)
    value = None
    if ours and base and ours.result and base.result:
        numerator = ours.result.requests_per_s if per == "req" else ours.vectors_per_s
        denominator = base.result.requests_per_s if per == "req" else base.vectors_per_s
        value = numerator / denominator if denominator > 0 else None
    return Target(name, value, goal, "x", True, problem)


def _throughput_target(name: str, run: Measurement | None, goal: float) -> Target:
    value = run.vectors_per_s if run and run.result else None
    return Target(name, value, goal, "/s", True, _problem(run))


def evaluate_targets(runs: list[Measurement], servers: dict[str, ServerFigures]) -> list[Target]:
    """The issue's targets from one benchmark run's measurements."""
    single = _find(runs, SERVICE, "encode-1")
    npy = _find(runs, SERVICE, "encode-npy-10000")
    oip_binary = _find(runs, SERVICE, "oip-binary-encode-10000")
    figures = servers.get(SERVICE)
    return [
        _ratio_target(
            "single-vector /encode req/s vs no-op app, pinned",
            single,
            _find(runs, NOOP, "encode-1"),
            1.0,
            "req",
        ),
        _ratio_target(
            "single-vector /encode req/s vs no-op app, CPUs shared",
            _find(runs, SERVICE, "encode-1-shared"),
            _find(runs, NOOP, "encode-1-shared"),
            0.8,
            "req",
        ),
        *(
            replace(
                _ratio_target(
                    f"the same without the access log, {placement}",
                    _find(runs, SERVICE_NOLOG, key),
                    _find(runs, NOOP, key),
                    goal,
                    "req",
                ),
                informational=True,
            )
            for key, placement, goal in (
                ("encode-1", "pinned", 1.0),
                ("encode-1-shared", "CPUs shared", 0.8),
            )
        ),
        _ratio_target(
            "1000-vector JSON /encode vectors/s vs straightforward",
            _find(runs, SERVICE, "encode-1000"),
            _find(runs, BASELINE, "encode-1000"),
            4.0,
            "vec",
        ),
        _ratio_target(
            "1000-vector JSON /reconstruct vectors/s vs straightforward",
            _find(runs, SERVICE, "reconstruct-1000"),
            _find(runs, BASELINE, "reconstruct-1000"),
            4.0,
            "vec",
        ),
        *(
            replace(
                _ratio_target(
                    f"1000-vector JSON /{path} vs typed baseline (response models)",
                    _find(runs, SERVICE, f"{path}-1000"),
                    _find(runs, TYPED, f"{path}-1000"),
                    4.0,
                    "vec",
                ),
                informational=True,
            )
            for path in ("encode", "reconstruct")
        ),
        _throughput_target(
            "1000-vector JSON /reconstruct vectors/s",
            _find(runs, SERVICE, "reconstruct-1000"),
            300_000,
        ),
        _throughput_target("10 000-vector .npy /encode vectors/s", npy, 2_000_000),
        _throughput_target(
            "10 000-vector binary OIP /infer (latent) vectors/s", oip_binary, 1_500_000
        ),
        _ratio_target(
            "10 000-vector binary OIP /infer vs .npy /encode",
            oip_binary,
            npy,
            0.9,
            "vec",
        ),
        _ratio_target(
            "1000-vector JSON OIP /infer (latent) vs JSON /encode",
            _find(runs, SERVICE, "oip-json-encode-1000"),
            _find(runs, SERVICE, "encode-1000"),
            0.8,
            "vec",
        ),
        replace(
            _ratio_target(
                "1000-vector JSON OIP reconstruction+error vs /reconstruct",
                _find(runs, SERVICE, "oip-json-reconstruct-1000"),
                _find(runs, SERVICE, "reconstruct-1000"),
                0.8,
                "vec",
            ),
            informational=True,
        ),
        Target(
            "single-vector /encode p99 latency, 8 connections, pinned",
            single.result.latency_p99_us / 1000 if single and single.result else None,
            5.0,
            " ms",
            False,
            _problem(single),
        ),
        Target(
            "start-up to /readyz 200",
            figures.startup_s if figures else None,
            1.0,
            " s",
            False,
            "" if figures else "not measured",
        ),
        Target(
            "resident memory (VmRSS) after the run",
            figures.rss_mb if figures and figures.rss_mb else None,
            120.0,
            " MB",
            False,
            "" if figures and figures.rss_mb else "not measured",
        ),
    ]


def _runs_table(runs: list[Measurement]) -> list[str]:
    header = (
        f"{'server':<16}{'workload':<27}{'conns':>6}{'req/s':>11}{'vectors/s':>13}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}{'spread':>8}  valid"
    )
    lines = [header, "-" * len(header)]
    for run in runs:
        r = run.result
        if r is None:
            lines.append(f"{run.server:<16}{run.workload:<27}{run.connections:>6}  {run.note}")
            continue
        lines.append(
            f"{run.server:<16}{run.workload:<27}{run.connections:>6}{r.requests_per_s:>11,.1f}"
            f"{run.vectors_per_s:>13,.0f}{r.latency_p50_us / 1000:>9.2f}"
            f"{r.latency_p99_us / 1000:>9.2f}{r.non2xx:>9}{r.socket_errors:>9}"
            f"{_spread(run.rounds, run.vectors_per_s):>8}  {'yes' if r.valid else 'NO'}"
        )
    return lines


def _servers_table(servers: dict[str, ServerFigures]) -> list[str]:
    header = f"{'server':<16}{'start-up s':>11}{'RSS MB':>9}{'peak RSS MB':>13}"
    lines = [header, "-" * len(header)]
    for name, fig in servers.items():
        lines.append(
            f"{name:<16}{fig.startup_s:>11.3f}{fig.rss_mb:>9.1f}{fig.peak_rss_mb:>13.1f}"
            + (f"  {'; '.join(fig.notes)}" if fig.notes else "")
        )
    return lines


def _targets_table(targets: list[Target]) -> list[str]:
    header = f"{'target (digitcode)':<66}{'value':>14}{'goal':>16}  status"
    lines = [header, "-" * len(header)]
    for t in targets:
        lines.append(f"{t.name:<66}{t.value_text:>14}{t.goal_text:>16}  {t.status}")
    return lines


def format_report(
    runs: list[Measurement], servers: dict[str, ServerFigures], targets: list[Target]
) -> str:
    """The printed report: runs, servers, targets."""
    return "\n".join(
        [*_runs_table(runs), "", *_servers_table(servers), "", *_targets_table(targets)]
    )


def report_dict(
    meta: dict[str, Any],
    runs: list[Measurement],
    servers: dict[str, ServerFigures],
    targets: list[Target],
    problems: list[str],
) -> dict[str, Any]:
    """Everything in the printed report, as JSON-ready data."""
    return {
        "meta": meta,
        "runs": [run.as_dict() for run in runs],
        "servers": {
            name: {
                "startup_s": fig.startup_s,
                "rss_mb": fig.rss_mb,
                "peak_rss_mb": fig.peak_rss_mb,
                "notes": fig.notes,
            }
            for name, fig in servers.items()
        },
        "targets": [t.as_dict() for t in targets],
        "all_targets_met": all(t.met for t in targets if not t.informational),
        "problems": problems,
    }


def markdown_tables(report: dict[str, Any]) -> str:
    """The README's tables (runs with their spread, then targets) from a saved JSON report."""
    lines = [
        "| server | workload | req/s | vectors/s | p50 ms | p99 ms | spread |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        wrk = run["wrk"]
        if wrk is None:
            lines.append(f"| {run['server']} | {run['workload']} | | | | | {run['note']} |")
            continue
        spread = _spread(run.get("rounds_vectors_per_s") or [], run["vectors_per_s"])
        server = f"**{run['server']}**" if run["server"] == SERVICE else run["server"]
        lines.append(
            f"| {server} | {run['workload']} | {wrk['requests_per_s']:,.1f} | "
            f"{run['vectors_per_s']:,.0f} | {wrk['latency_p50_us'] / 1000:.2f} | "
            f"{wrk['latency_p99_us'] / 1000:.2f} | {spread} |"
        )
    lines += ["", "| target | this run | goal | |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        target = Target(
            t["name"], t["value"], t["goal"], t["unit"], t["higher_is_better"],
            informational=t["informational"],
        )  # fmt: skip
        status = t["status"] if t["met"] or t["informational"] else f"**{t['status']}**"
        goal = target.goal_text.replace(">=", "≥").replace("<=", "≤")
        lines.append(f"| {t['name']} | {target.value_text} | {goal} | {status} |")
    servers = report["servers"]
    lines += ["", "| server | start-up s | RSS MB |", "|---|---:|---:|"]
    lines += [f"| {n} | {s['startup_s']:.3f} | {s['rss_mb']:.1f} |" for n, s in servers.items()]
    return "\n".join(lines)


README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def picture_title(report: dict[str, Any]) -> str:
    """Which run a table or picture shows: date, commit, machine."""
    meta = report["meta"]
    cpu = f" ({meta['cpu']})" if meta.get("cpu") else ""
    return f"{meta.get('date', '')}, commit {meta['git']}, {meta['cpus']} CPUs{cpu}"


def readme_block(report: dict[str, Any]) -> str:
    """The README's generated part: which run, then :func:`markdown_tables`."""
    meta = report["meta"]
    placement = (
        f"server on CPU {meta['server_cpus']}, wrk on CPU {meta['wrk_cpus']}"
        if meta.get("server_cpus")
        else "no pinning"
    )
    return "\n".join(
        [
            README_START,
            "<!-- generated by `python -m benchmarks.report --readme README.md` from "
            "docs/performance/bench.json: do not edit -->",
            "",
            f"Run of {picture_title(report)}; {meta['rounds']} rounds of {meta['duration_s']:g} s,"
            f" {placement} (`encode-1-shared`: not pinned).",
            "",
            markdown_tables(report),
            README_END,
        ]
    )


def update_readme(readme: Path, report: dict[str, Any]) -> None:
    """Replace the block between :data:`README_START` and :data:`README_END` in ``readme``.

    Raises
    ------
    ValueError
        If the markers are missing.
    """
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    readme.write_text(
        text[:start] + readme_block(report) + text[end + len(README_END) :], encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.report [--readme README.md] [REPORT.json]``: print the tables, or
    rewrite the README's generated block from a saved report."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("report", nargs="?", default="docs/performance/bench.json", type=Path)
    parser.add_argument("--readme", type=Path, help="rewrite this README's generated block")
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    if args.readme:
        update_readme(args.readme, report)
    else:
        print(markdown_tables(report))


if __name__ == "__main__":
    main()
