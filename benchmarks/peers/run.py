"""``make bench-peers``: digitcode against MLflow, BentoML and LitServe serving the same model.

``python -m benchmarks.peers [--duration S] [--warmup S] [--rounds N] [--json PATH]
[--readme README.md] [--peers mlflow,bentoml,litserve] [--no-pin] [--lock PATH] [--no-run]``

1. Each peer gets its own virtualenv, ``build/peers/<name>/venv``, with the exact versions of
   ``benchmarks/peers/requirements-<name>.txt`` (reused while that file is unchanged).
2. The scikit-learn autoencoder (``MinMaxScaler`` + ``MLPRegressor`` with the committed
   model's weights, :mod:`benchmarks.peers.model`) is written with joblib into a temporary
   directory; MLflow's model directory is saved from it by the MLflow venv.
3. Holding an exclusive lock on ``--lock`` (``/tmp/digitcode-bench.lock``, the lock the
   project's other benchmark runs take with ``flock``), so that no two benchmarks time at once,
   for ``--rounds`` rounds: each server in turn (digitcode, mlflow, bentoml, litserve) is
   started pinned to CPU 0, its answers to the exact bodies wrk sends are checked against the
   scikit-learn model in-process (a server with wrong answers is not timed), each workload
   gets a warm-up and a timed wrk run pinned to CPU 1, and its processes' memory is read.
4. The median round of each figure is printed, written as JSON, and with ``--readme`` put
   between the README's ``<!-- peers:start -->`` and ``<!-- peers:end -->`` markers.

``--no-run`` only rewrites the README block from the JSON. Exit status 1 when a server could
not be installed, started or checked, or a run had a non-2xx answer or a socket error.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from benchmarks.answers import JSON_TYPE, AnswerMismatchError, check_answers
from benchmarks.machine import (
    add_run_options,
    check_run_options,
    cpu_model,
    git_commit,
    load_average,
    wrk_version,
)
from benchmarks.peers.formats import FORMATS, OPERATIONS, Operation, fetch_answers
from benchmarks.peers.model import TOLERANCE, SklearnModel, write_model
from benchmarks.peers.process import RunningPeer, start_peer
from benchmarks.peers.report import (
    PEERS,
    SERVICE,
    ServerRounds,
    markdown,
    report_dict,
    rewrite_readme,
)
from benchmarks.peers.venvs import ensure_venv
from benchmarks.report import Measurement, median_runs
from benchmarks.run import load_rows
from benchmarks.servers import ServerError, ServerSpec
from benchmarks.wrk import WrkError, ensure_wrk, run_wrk, write_wrk_script, wrk_command

__all__ = ["WORKLOADS", "PeerServer", "Workload", "main", "parse_args", "request_bodies"]

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "default"
SERVERS_DIR = Path(__file__).resolve().parent / "servers"
BUILD_DIR = ROOT / "build" / "peers"
DEFAULT_JSON = ROOT / "docs" / "performance" / "peers.json"
DEFAULT_LOCK = Path("/tmp/digitcode-bench.lock")


@dataclass(frozen=True)
class Workload:
    """One kind of request, sent over and over by wrk to every server.

    Attributes
    ----------
    key : str
        Name in the report, e.g. ``"reconstruct-1000"``.
    operation : str
        ``"encode"`` or ``"reconstruct"``.
    vectors : int
        Rows per request (the first rows of ``optdigits.tes``).
    connections : int
        wrk connections.
    """

    key: str
    operation: Operation
    vectors: int
    connections: int


WORKLOADS = (
    Workload("reconstruct-1", "reconstruct", 1, 8),
    Workload("reconstruct-1000", "reconstruct", 1000, 4),
    Workload("encode-1000", "encode", 1000, 4),
)


@dataclass(frozen=True)
class PeerServer:
    """A server to measure: how to start it and where it says it is ready."""

    spec: ServerSpec
    ready_path: str
    cwd: Path
    versions: dict[str, str] = field(default_factory=dict)


def request_bodies(rows: NDArray[np.float64], sizes: tuple[int, ...]) -> dict[str, Any]:
    """Every server's body for every operation and batch size: ``[server][(op, n)] = bytes``."""
    return {
        server: {
            (operation, n): fmt.body(rows[:n], operation) for operation in OPERATIONS for n in sizes
        }
        for server, fmt in FORMATS.items()
    }


def _venv_versions(bin_dir: Path, packages: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(p):\n"
        "    try:\n"
        "        return m.version(p)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        "print(json.dumps({p: v(p) for p in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(bin_dir / "python"), "-c", code, *packages],
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, str | None] = json.loads(out.stdout)
    return {name: version for name, version in found.items() if version is not None}


def _peer_env(bin_dir: Path, model_file: Path) -> dict[str, str]:
    return {
        # As in an activated venv: `mlflow models serve` runs `uvicorn` from PATH.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(bin_dir.parent),
        "PEER_MODEL": str(model_file),
        "PYTHONPATH": str(SERVERS_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _digitcode() -> PeerServer:
    spec = ServerSpec(
        SERVICE,
        [sys.executable, "-m", "service"],
        {
            "DIGITCODE_HOST": "127.0.0.1",
            "DIGITCODE_PORT": "{port}",
            "DIGITCODE_MODEL_DIR": str(MODEL_DIR),
            "DIGITCODE_MAX_BATCH": "10000",
            "DIGITCODE_WORKERS": "1",
            "DIGITCODE_DRAIN_SECONDS": "0",
        },
    )
    versions = {p: metadata.version(p) for p in ("starlette", "uvicorn", "numpy")}
    return PeerServer(spec, "/readyz", ROOT, versions)


def _peer(name: str, bin_dir: Path, work: Path, model_file: Path) -> PeerServer:
    """How to start peer ``name`` from its venv (MLflow's model directory is saved here)."""
    env = _peer_env(bin_dir, model_file)
    if name == "mlflow":
        model_dir = work / "mlflow-model"
        subprocess.run(
            [bin_dir / "python", SERVERS_DIR / "mlflow_build.py", model_file, model_dir],
            cwd=work,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_dir)]
        argv += ["--env-manager", "local", "--workers", "1", "-h", "127.0.0.1", "-p", "{port}"]
        return PeerServer(ServerSpec(name, argv, env), "/health", work)
    if name == "bentoml":
        argv = [str(bin_dir / "bentoml"), "serve", "bento_service:Digits"]
        argv += ["--working-dir", str(SERVERS_DIR), "--host", "127.0.0.1", "-p", "{port}"]
        env |= {"BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        return PeerServer(ServerSpec(name, argv, env), "/readyz", work)
    if name == "litserve":
        argv = [str(bin_dir / "python"), str(SERVERS_DIR / "lit_server.py"), "{port}"]
        return PeerServer(ServerSpec(name, argv, env), "/health", work)
    raise ValueError(f"unknown peer {name!r}")


@contextmanager
def exclusive_lock(path: Path | None) -> Iterator[None]:
    """Hold ``flock(path)`` exclusively (the same lock as ``flock PATH command``)."""
    if path is None:
        yield
        return
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"bench-peers: waiting for the lock on {path} (another benchmark)", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class PeersBench:
    """One ``make bench-peers`` run: bodies, scripts, the reference model, figures so far."""

    def __init__(self, args: argparse.Namespace, work: Path, model: SklearnModel) -> None:
        self.args = args
        self.model = model
        sizes = tuple(sorted({1, *(w.vectors for w in WORKLOADS)}))
        self.rows = load_rows(max(sizes))
        self.bodies = request_bodies(self.rows, sizes)
        pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
        self.server_cpus: str | None = "0" if pin else None
        self.wrk_cpus: str | None = "1" if pin else None
        self.scripts: dict[tuple[str, str], Path] = {}
        for server, bodies in self.bodies.items():
            for w in WORKLOADS:
                body = work / f"{server}-{w.operation}-{w.vectors}.json"
                body.write_bytes(bodies[(w.operation, w.vectors)])
                self.scripts[server, w.key] = write_wrk_script(
                    work / f"{server}-{w.key}.lua", body, JSON_TYPE
                )
        self.runs: list[Measurement] = []
        self.figures: dict[str, ServerRounds] = {}
        self.problems: list[str] = []

    def check(self, server: str, client: httpx.Client) -> None:
        """Check a server's answers for 1 and 1000 rows against the scikit-learn model.

        Raises
        ------
        AnswerMismatchError
            If an answer is missing, malformed or differs by more than :data:`TOLERANCE`.
        """
        for n in sorted({w.vectors for w in WORKLOADS}):
            bodies = {op: self.bodies[server][(op, n)] for op in OPERATIONS}
            answers = fetch_answers(client, server, bodies, latent_size=self.model.latent_size)
            check_answers(
                self.model.answers(self.rows[:n]),
                answers,
                atol=TOLERANCE,
                rtol=TOLERANCE,
                label=f"{server} answers for {n} rows",
            )

    def _wrk(self, peer: RunningPeer, workload: Workload, duration_s: float) -> list[str]:
        path = FORMATS[peer.spec.name].paths[workload.operation]
        return wrk_command(
            peer.base_url + path,
            self.scripts[peer.spec.name, workload.key],
            duration_s=duration_s,
            connections=workload.connections,
            timeout_s=30.0,
            cpus=self.wrk_cpus,
        )

    def time_workload(self, peer: RunningPeer, workload: Workload) -> Measurement:
        """A warm-up run, then the timed run."""
        name = peer.spec.name
        if self.args.warmup > 0:
            warmup = run_wrk(self._wrk(peer, workload, self.args.warmup))
            if not warmup.valid:
                self.problems.append(f"{name} {workload.key}: warm-up had errors: {warmup}")
        result = run_wrk(self._wrk(peer, workload, self.args.duration))
        run = Measurement(name, workload.key, workload.vectors, workload.connections, result)
        if result.requests == 0:
            self.problems.append(f"{name} {workload.key}: no request completed in the run")
        elif not result.valid:
            self.problems.append(
                f"{name} {workload.key}: {result.non2xx} non-2xx (first status "
                f"{result.first_bad_status}), {result.socket_errors} socket errors"
            )
        print(
            f"bench-peers:   {name} {workload.key}: {result.requests_per_s:,.1f} req/s, "
            f"{run.vectors_per_s:,.0f} vectors/s, p50 {result.latency_p50_us / 1000:.2f} ms, "
            f"p99 {result.latency_p99_us / 1000:.2f} ms, non-2xx {result.non2xx}, "
            f"socket errors {result.socket_errors}",
            flush=True,
        )
        return run

    def _not_timed(self, name: str, note: str) -> None:
        for w in WORKLOADS:
            self.runs.append(Measurement(name, w.key, w.vectors, w.connections, None, note))

    def bench_server(self, server: PeerServer) -> None:
        """Start, check, time every workload, read memory, stop; problems are recorded."""
        name = server.spec.name
        print(f"bench-peers: starting {name}: {' '.join(server.spec.argv)}", flush=True)
        figures = self.figures.setdefault(name, ServerRounds())
        try:
            with start_peer(
                server.spec, ready_path=server.ready_path, cwd=server.cwd, cpus=self.server_cpus
            ) as peer:
                figures.startup_s.append(peer.startup_s)
                print(f"bench-peers: {name} ready in {peer.startup_s:.2f} s", flush=True)
                with httpx.Client(base_url=peer.base_url, timeout=60.0) as client:
                    self.check(name, client)
                print(f"bench-peers: {name} answers agree with scikit-learn", flush=True)
                for workload in WORKLOADS:
                    self.runs.append(self.time_workload(peer, workload))
                memory = peer.memory()
        except (AnswerMismatchError, ServerError) as exc:
            self.problems.append(f"{name}: {exc}")
            print(f"bench-peers: {name} NOT TIMED: {exc}", file=sys.stderr, flush=True)
            self._not_timed(name, str(exc).splitlines()[0])
            return
        figures.largest_rss_mb.append(max(p.rss_mb for p in memory))
        figures.total_rss_mb.append(sum(p.rss_mb for p in memory))
        figures.processes = [
            {"pid": p.pid, "command": p.command, "rss_mb": round(p.rss_mb, 1)} for p in memory
        ]


def _meta(
    args: argparse.Namespace, bench: PeersBench, servers: list[PeerServer], commit: str
) -> dict[str, Any]:
    versions = {s.spec.name: s.versions.get(s.spec.name, "") for s in servers}
    versions[SERVICE] = commit
    packages = {"scikit-learn": metadata.version("scikit-learn"), "numpy": np.__version__}
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "git": commit,
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "wrk": wrk_version(),
        "versions": versions,
        "packages": packages,
        "server_packages": {s.spec.name: s.versions for s in servers},
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server_cpus": bench.server_cpus,
        "wrk_cpus": bench.wrk_cpus,
        "tolerance": TOLERANCE,
        "load_average_at_end": load_average(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    add_run_options(parser, duration=5.0, json=DEFAULT_JSON)
    parser.add_argument("--readme", type=Path, help="rewrite this README's peers block")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated peers (default: all three)"
    )
    parser.add_argument(
        "--lock",
        type=Path,
        default=DEFAULT_LOCK,
        help="file locked while timing, shared with the other benchmarks ('' for none)",
    )
    parser.add_argument(
        "--no-run", action="store_true", help="only rewrite --readme's block from --json"
    )
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    check_run_options(parser, args)
    if args.no_run and args.readme is None:
        parser.error("--no-run needs --readme")
    if str(args.lock) in ("", "."):
        args.lock = None
    return args


def _prepare(
    args: argparse.Namespace, work: Path, model_file: Path, problems: list[str]
) -> list[PeerServer]:
    """digitcode and every peer that installed and set up; failures are recorded."""
    servers = [_digitcode()]
    for name in args.peers:
        try:
            bin_dir = ensure_venv(BUILD_DIR, name)
            server = _peer(name, bin_dir, work, model_file)
            packages = (name, "scikit-learn", "numpy", "starlette", "uvicorn")
            servers.append(replace(server, versions=_venv_versions(bin_dir, packages)))
        except subprocess.CalledProcessError as exc:
            stderr = exc.stderr or b""
            output = stderr if isinstance(stderr, str) else stderr.decode(errors="replace")
            output = output[-2000:]
            problems.append(f"{name}: set-up failed: {' '.join(map(str, exc.cmd))}\n{output}")
            print(f"bench-peers: {name}: SET-UP FAILED\n{output}", file=sys.stderr, flush=True)
    return servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_run:
        report = json.loads(args.json.read_text(encoding="utf-8"))
        rewrite_readme(args.readme, report)
        print(f"bench-peers: rewrote the peers block of {args.readme} from {args.json}")
        return 0
    started = time.monotonic()
    commit = git_commit(ROOT)  # what is measured: the tree as the run starts
    ensure_wrk()
    model = SklearnModel.from_dir(MODEL_DIR)
    with tempfile.TemporaryDirectory(prefix="digitcode-peers-") as tmp:
        work = Path(tmp)
        model_file = write_model(model, work / "model.joblib")
        problems: list[str] = []
        servers = _prepare(args, work, model_file, problems)
        bench = PeersBench(args, work, model)
        bench.problems.extend(problems)
        print(f"bench-peers: set up in {time.monotonic() - started:.0f} s", flush=True)
        with exclusive_lock(args.lock):
            load = load_average()
            if load > 0.5:
                print(f"bench-peers: WARNING: load average {load:.2f}; figures will be noisy")
            for round_number in range(1, args.rounds + 1):
                print(f"bench-peers: round {round_number} of {args.rounds}", flush=True)
                for server in servers:
                    try:
                        bench.bench_server(server)
                    except WrkError as exc:
                        bench.problems.append(f"{server.spec.name}: {exc}")
        runs = median_runs(bench.runs)
        meta = _meta(args, bench, servers, commit)
        meta["load_average_at_start"] = load
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
        report = report_dict(meta, runs, bench.figures, [w.key for w in WORKLOADS], bench.problems)
    print()
    print(markdown(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nbench-peers: wrote {args.json}")
    if args.readme is not None:
        rewrite_readme(args.readme, report)
        print(f"bench-peers: rewrote the peers block of {args.readme}")
    for problem in bench.problems:
        print(f"bench-peers: PROBLEM: {problem}", file=sys.stderr)
    return 1 if bench.problems else 0
