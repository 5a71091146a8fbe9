"""What every benchmark run records about where it ran, and the options every runner takes.

Shared by ``make bench`` (:mod:`benchmarks.run`) and ``make bench-peers``
(:mod:`benchmarks.peers.run`), so that both describe a run the same way.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
from pathlib import Path

__all__ = [
    "add_run_options",
    "check_run_options",
    "cpu_model",
    "git_commit",
    "load_average",
    "wrk_version",
]


def add_run_options(parser: argparse.ArgumentParser, duration: float, json: Path) -> None:
    """``--rounds``, ``--duration``, ``--warmup``, ``--json`` and ``--no-pin``."""
    parser.add_argument("--rounds", type=int, default=3, help="times every server is measured")
    parser.add_argument("--duration", type=float, default=duration, help="seconds per timed run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument("--json", type=Path, default=json, help="where to write JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk")


def check_run_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error for options :func:`add_run_options` added that make no run."""
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")


def git_commit(root: Path) -> str:
    """The commit checked out at ``root`` (``-dirty`` with uncommitted changes)."""
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True
    )
    return described.stdout.strip()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> float:
    """The 1-minute load average (0 where /proc/loadavg is unreadable)."""
    try:
        return float(Path("/proc/loadavg").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def wrk_version() -> str:
    """The first line ``wrk -v`` prints (empty if it prints nothing)."""
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    output = wrk.stdout + wrk.stderr
    return output.splitlines()[0] if output else ""
