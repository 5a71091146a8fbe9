"""``make bench``: the service against a no-op and a straightforward FastAPI app, with wrk.

``python -m benchmarks.run [--rounds N] [--duration S] [--warmup S] [--json PATH] [--no-pin]
[--strict] [--curve-duration S] [--no-curves] [--publish]``

The servers are started one at a time on loopback (a free port, one uvicorn worker each):

``noop``
    ``benchmarks.apps:noop_app``, the ceiling for one worker.
``straightforward``
    ``benchmarks.apps:straightforward_app``: pydantic models, same numpy forward pass.
``digitcode``
    ``python -m service`` on ``models/default`` with its default settings (access log on) but
    one worker and ``DIGITCODE_MAX_BATCH=10000``, also timed on the Open Inference Protocol's
    ``infer`` (JSON and binary tensors).
``digitcode-nolog``
    The same without the access log, on the one-vector workloads (for information).

The one-vector workload also runs with server and wrk sharing the CPUs (``encode-1-shared``).
After the rounds, the cost curves (:mod:`benchmarks.curves`) are measured and drawn.

Before any timing, every server's answers to the exact bodies the runs send are checked: the
straightforward app against the in-process model, the service against the straightforward
app, and the service's ``infer`` answers against the model and its own native answers (all
servers compute the same float32 forward pass, so to float32 rounding: 1e-6 relative and
absolute). A server with wrong answers is not timed. Then
each workload gets a warm-up run and a timed run of wrk (one thread); on a machine with two or
more CPUs the server is pinned to CPU 0 and wrk to CPU 1 (``--no-pin`` turns this off). Any
non-2xx answer or socket error makes a run invalid and its target "NOT met".

All of that is repeated in rounds (3 by default: noop, straightforward, typed, digitcode, then
again). Each figure reported is the round with the median vectors/s for that server and
workload, so a burst of load from other processes during one run does not decide a ratio; the
spread of the rounds is printed beside it. Start-up is the median, memory the largest.

The report is printed and written as JSON (default ``benchmarks/results/latest.json``). Exit
status: 0 when all runs were valid and all answers agreed, 1 otherwise; with ``--strict`` also
1 when a target is not met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from benchmarks.answers import (
    JSON_TYPE,
    NPY_TYPE,
    OIP_BINARY_TYPE,
    OIP_ENCODE,
    OIP_PATH,
    OIP_RECONSTRUCT,
    AnswerMismatchError,
    Answers,
    NpyUnsupportedError,
    OipBody,
    check_answers,
    fetch_json_answers,
    fetch_npy_answers,
    fetch_oip_answers,
    json_body,
    npy_body,
    oip_body,
)
from benchmarks.curves import (
    CONNECTIONS,
    ROW_CONNECTIONS,
    CurvePoint,
    check_curve_answers,
    plot_curves,
    write_row_bodies,
)
from benchmarks.machine import (
    add_run_options,
    check_run_options,
    cpu_model,
    git_commit,
    load_average,
    wrk_version,
)
from benchmarks.report import (
    BASELINE,
    NOOP,
    SERVICE,
    SERVICE_NOLOG,
    TYPED,
    Measurement,
    ServerFigures,
    evaluate_targets,
    format_report,
    median_runs,
    merge_figures,
    picture_title,
    report_dict,
    update_readme,
)
from benchmarks.servers import (
    RunningServer,
    ServerError,
    ServerSpec,
    python_argv,
    start_server,
    unpin,
)
from benchmarks.wrk import (
    WrkError,
    WrkResult,
    ensure_wrk,
    run_wrk,
    write_wrk_script,
    wrk_command,
)
from service.model import Autoencoder

__all__ = ["Workload", "load_rows", "main", "oip_bodies", "reference_answers", "workloads"]

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path("models/default")  # relative to ROOT, where the servers run
TEST_FILE = ROOT / "data" / "optdigits.tes"
RESULTS = ROOT / "benchmarks" / "results"  # git-ignored
DEFAULT_JSON = RESULTS / "latest.json"
PUBLISHED = ROOT / "docs" / "performance"  # committed: bench.json and the pictures
README = ROOT / "README.md"


UVICORN = ("-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1")
# The service as users run it: default settings (an access log line per request, metrics), but
# one worker (the targets are per worker) and every row count the workloads send.
_SERVICE_ENV = {
    "DIGITCODE_HOST": "127.0.0.1",
    "DIGITCODE_PORT": "{port}",
    "DIGITCODE_MODEL_DIR": str(MODEL_DIR),
    "DIGITCODE_MAX_BATCH": "10000",
    "DIGITCODE_WORKERS": "1",
    # Stopped between workloads: no 5 s drain each time (nothing measured depends on it).
    "DIGITCODE_DRAIN_SECONDS": "0",
}
# Every server gets one BLAS thread (benchmarks.servers.server_environment), as the service sets
# for itself, so that unpinned runs (--no-pin) do not handicap the baselines with threads
# fighting for 2 cores.
SERVERS = (
    ServerSpec(NOOP, python_argv(*UVICORN, "--log-level", "warning", "benchmarks.apps:noop_app")),
    ServerSpec(
        BASELINE,
        python_argv(*UVICORN, "--log-level", "warning", "benchmarks.apps:straightforward_app"),
        {"DIGITCODE_MODEL_DIR": str(MODEL_DIR)},
    ),
    ServerSpec(
        TYPED,
        python_argv(*UVICORN, "--log-level", "warning", "benchmarks.apps:typed_app"),
        {"DIGITCODE_MODEL_DIR": str(MODEL_DIR)},
    ),
    ServerSpec(SERVICE, python_argv("-m", "service"), _SERVICE_ENV),
    # For information: the same without its access log (the baselines log no line per request).
    ServerSpec(
        SERVICE_NOLOG,
        python_argv("-m", "service"),
        {**_SERVICE_ENV, "DIGITCODE_LOG_LEVEL": "warning"},
    ),
)


@dataclass(frozen=True)
class Workload:
    """One kind of request, sent over and over by wrk.

    Attributes
    ----------
    key : str
        Name in the report, e.g. ``"encode-1000"``.
    path : str
        Endpoint, e.g. ``"/encode"``.
    body : str
        Name of the body file (``single.json``, ``batch.json``, ``batch.npy``, or one of
        :func:`oip_bodies`, whose extra headers are sent with it).
    content_type : str
        Sent as ``Content-Type`` and ``Accept``.
    vectors : int
        Vectors per request.
    connections : int
        wrk connections.
    servers : tuple of str
        Servers that run this workload.
    shared : bool
        Run with server and wrk sharing the CPUs (no pinning), after the pinned workloads; only
        when the others are pinned.
    """

    key: str
    path: str
    body: str
    content_type: str
    vectors: int
    connections: int
    servers: tuple[str, ...]
    shared: bool = False

    @property
    def npy(self) -> bool:
        return self.content_type == NPY_TYPE


def workloads(batch: int, npy_batch: int, connections: int) -> list[Workload]:
    """The workloads of the issue, plus ``.npy`` /reconstruct for information.

    The Open Inference Protocol ones ask ``infer`` for what ``/encode`` answers (``latent``,
    binary tensors and JSON) and what ``/reconstruct`` answers (``reconstruction`` and
    ``error``, JSON).
    """
    both = (BASELINE, TYPED, SERVICE)
    single = (NOOP, SERVICE, SERVICE_NOLOG)
    return [
        Workload(
            "encode-1",
            "/encode",
            "single.json",
            JSON_TYPE,
            1,
            connections,
            (*single, BASELINE, TYPED),
        ),
        Workload(
            "encode-1-shared", "/encode", "single.json", JSON_TYPE, 1, connections, single, True
        ),
        Workload(f"encode-{batch}", "/encode", "batch.json", JSON_TYPE, batch, 4, both),
        Workload(f"reconstruct-{batch}", "/reconstruct", "batch.json", JSON_TYPE, batch, 4, both),
        Workload(
            f"encode-npy-{npy_batch}", "/encode", "batch.npy", NPY_TYPE, npy_batch, 4, (SERVICE,)
        ),
        Workload(
            f"reconstruct-npy-{npy_batch}",
            "/reconstruct",
            "batch.npy",
            NPY_TYPE,
            npy_batch,
            4,
            (SERVICE,),
        ),
        Workload(
            f"oip-binary-encode-{npy_batch}",
            OIP_PATH,
            "oip-encode.bin",
            OIP_BINARY_TYPE,
            npy_batch,
            4,
            (SERVICE,),
        ),
        Workload(
            f"oip-json-encode-{batch}", OIP_PATH, "oip-encode.json", JSON_TYPE, batch, 4, (SERVICE,)
        ),
        Workload(
            f"oip-json-reconstruct-{batch}",
            OIP_PATH,
            "oip-reconstruct.json",
            JSON_TYPE,
            batch,
            4,
            (SERVICE,),
        ),
    ]


def oip_bodies(rows: NDArray[np.float64], batch: int) -> dict[str, OipBody]:
    """The ``infer`` bodies by file name: binary on all ``rows``, JSON on the first ``batch``.

    The binary reconstruction body is only sent by the answer check.
    """
    some = rows[:batch]
    return {
        "oip-encode.bin": oip_body(rows, OIP_ENCODE, binary=True),
        "oip-reconstruct.bin": oip_body(rows, OIP_RECONSTRUCT, binary=True),
        "oip-encode.json": oip_body(some, OIP_ENCODE, binary=False),
        "oip-reconstruct.json": oip_body(some, OIP_RECONSTRUCT, binary=False),
    }


def load_rows(n: int, path: Path = TEST_FILE, seed: int = 0) -> NDArray[np.float64]:
    """``n`` pixel rows: optdigits test rows (repeated as needed), or synthetic 0..16 integers.

    Returns
    -------
    X : ndarray of shape (n, 64)
    """
    if path.is_file():
        data = np.loadtxt(path, delimiter=",")[:, :64]
    else:
        print(f"bench: {path} not found; using synthetic rows in 0..16", flush=True)
        data = np.random.default_rng(seed).integers(0, 17, size=(2000, 64)).astype(np.float64)
    return np.resize(data, (n, 64)).astype(np.float64)


def reference_answers(model: Autoencoder, X: NDArray[np.float64]) -> Answers:
    """The in-process model's answers for pixel rows ``X``."""
    vectors, errors = model.reconstruct(X)
    return Answers(latent=model.encode(X), vectors=vectors, errors=errors)


def write_inputs(
    workdir: Path,
    rows: NDArray[np.float64],
    batch: int,
    all_workloads: list[Workload],
    oip: dict[str, OipBody],
) -> dict[str, Path]:
    """Write the request bodies and one wrk script per workload; return the scripts by key."""
    (workdir / "single.json").write_bytes(json_body(rows[:1]))
    (workdir / "batch.json").write_bytes(json_body(rows[:batch]))
    (workdir / "batch.npy").write_bytes(npy_body(rows, np.float32))
    for name, body in oip.items():
        (workdir / name).write_bytes(body.content)
    return {
        w.key: write_wrk_script(
            workdir / f"{w.key}.lua",
            workdir / w.body,
            w.content_type,
            headers=oip[w.body].headers if w.body in oip else None,
        )
        for w in all_workloads
    }


class Bench:
    """State of one ``make bench`` run: inputs, reference answers, results so far."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rows = load_rows(args.npy_batch)
        self.workloads = workloads(args.batch, args.npy_batch, args.connections)
        self.oip = oip_bodies(self.rows, args.batch)
        self.scripts = write_inputs(workdir, self.rows, args.batch, self.workloads, self.oip)
        self.model = Autoencoder.from_dir(ROOT / MODEL_DIR)
        pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
        self.server_cpus: str | None = "0" if pin else None
        self.wrk_cpus: str | None = "1" if pin else None
        self.runs: list[Measurement] = []  # every round's runs
        self.curve_points: list[CurvePoint] = []
        self.figures: dict[str, list[ServerFigures]] = {}  # every round's figures per server
        self.problems: list[str] = []
        self.baseline_answers: dict[str, Answers] = {}
        # The service's own native answers ("JSON batch", "JSON 1-vector", ".npy": float32 of
        # all rows), which its OIP answers must equal.
        self.native_answers: dict[str, Answers] = {}

    # --- answer checks -------------------------------------------------------------------

    def _bodies(self) -> list[tuple[str, NDArray[np.float64], bytes]]:
        single, batch = self.rows[:1], self.rows[: self.args.batch]
        return [("1-vector", single, json_body(single)), ("batch", batch, json_body(batch))]

    def check_server(self, server: RunningServer) -> set[str]:
        """Check a server's answers; return the workload keys it must not run (and why, logged).

        Raises
        ------
        AnswerMismatchError
            If the server's JSON answers differ from the reference.
        """
        with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
            return self.check_answers_of(server.spec.name, client)

    def check_answers_of(self, name: str, client: httpx.Client) -> set[str]:
        """:meth:`check_server` on a client of server ``name`` (live, or in-process in tests)."""
        if name == NOOP:
            answer = client.post("/encode", content=b"{}", headers={"Content-Type": JSON_TYPE})
            if answer.status_code != 200 or answer.json() != {"ok": True}:
                raise AnswerMismatchError(f"noop answered {answer.status_code} {answer.text!r}")
            return set()
        for label, X, body in self._bodies():
            answers = fetch_json_answers(client, body)
            what = f"{name} JSON {label} answers"
            check_answers(reference_answers(self.model, X), answers, label=what)
            if name == BASELINE:
                self.baseline_answers[label] = answers
            elif label in self.baseline_answers:
                check_answers(
                    self.baseline_answers[label],
                    answers,
                    label=f"{what} (against the straightforward app's)",
                )
            if name == SERVICE:
                self.native_answers[f"JSON {label}"] = answers
        if name != SERVICE:  # the no-log service runs the JSON single-vector workloads only
            return set()
        return self._check_npy(client) | self._check_oip(client)

    def _check_npy(self, client: httpx.Client) -> set[str]:
        npy_keys = {w.key for w in self.workloads if w.npy}
        batch = self.rows[: self.args.batch]
        try:
            check_answers(
                reference_answers(self.model, batch),
                fetch_npy_answers(client, npy_body(batch, np.float64), np.float64),
                label="digitcode float64 .npy answers",
            )
            answers = fetch_npy_answers(client, npy_body(self.rows, np.float32), np.float32)
            check_answers(
                reference_answers(self.model, self.rows),
                answers,
                label="digitcode float32 .npy answers",
            )
            self.native_answers[".npy"] = answers
        except NpyUnsupportedError as exc:
            self._skip(npy_keys, f"missing: .npy not served ({exc})")
            return npy_keys
        except AnswerMismatchError as exc:
            self.problems.append(str(exc))
            self._skip(npy_keys, "not timed: .npy answers differ")
            return npy_keys
        print("bench: digitcode .npy answers agree with the reference", flush=True)
        return set()

    def _check_oip(self, client: httpx.Client) -> set[str]:
        """Check the ``infer`` answers, binary and JSON; return the keys not to time.

        Against the in-process model, and against the service's own native answers for the
        same rows (float32 ``.npy`` for binary, JSON for JSON) when it gave them.
        """
        skip: set[str] = set()
        batch = self.rows[: self.args.batch]
        for label, X, suffix, native in (
            ("binary", self.rows, ".bin", ".npy"),
            ("JSON", batch, ".json", "JSON batch"),
        ):
            keys = {w.key for w in self.workloads if w.path == OIP_PATH and w.body.endswith(suffix)}
            what = f"digitcode OIP {label} answers"
            try:
                answers = fetch_oip_answers(
                    client, self.oip[f"oip-encode{suffix}"], self.oip[f"oip-reconstruct{suffix}"]
                )
                check_answers(reference_answers(self.model, X), answers, label=what)
                if native in self.native_answers:
                    check_answers(
                        self.native_answers[native],
                        answers,
                        label=f"{what} (against its native {native} answers)",
                    )
            except AnswerMismatchError as exc:
                self.problems.append(str(exc))
                self._skip(keys, f"not timed: OIP {label} answers differ")
                skip |= keys
                continue
            also = f" and its native {native} answers" if native in self.native_answers else ""
            print(f"bench: {what} agree with the reference{also}", flush=True)
        return skip

    def _skip(self, keys: set[str], note: str) -> None:
        print(f"bench: digitcode {', '.join(sorted(keys))}: {note}", flush=True)
        for w in self.workloads:
            if w.key in keys:
                self.runs.append(Measurement(SERVICE, w.key, w.vectors, w.connections, None, note))

    # --- timing ----------------------------------------------------------------------------

    def _wrk(self, server: RunningServer, workload: Workload, duration_s: float) -> list[str]:
        return wrk_command(
            server.base_url + workload.path,
            self.scripts[workload.key],
            duration_s=duration_s,
            connections=workload.connections,
            cpus=None if workload.shared else self.wrk_cpus,
        )

    def time_workload(self, server: RunningServer, workload: Workload) -> Measurement:
        """A warm-up run, then the timed run of one workload against one server."""
        name = server.spec.name
        if self.args.warmup > 0:
            warmup = run_wrk(self._wrk(server, workload, self.args.warmup))
            if not warmup.valid:
                self.problems.append(f"{name} {workload.key}: warm-up had errors: {warmup}")
        command = self._wrk(server, workload, self.args.duration)
        print(f"bench: {name} {workload.key}: {' '.join(command)}", flush=True)
        result = run_wrk(command)
        run = Measurement(name, workload.key, workload.vectors, workload.connections, result)
        if not result.valid:
            self.problems.append(
                f"{name} {workload.key}: {result.non2xx} non-2xx (first status "
                f"{result.first_bad_status}), {result.socket_errors} socket errors"
            )
        print(
            f"bench:   {result.requests_per_s:,.1f} req/s, {run.vectors_per_s:,.0f} vectors/s, "
            f"p99 {result.latency_p99_us / 1000:.2f} ms, non-2xx {result.non2xx}",
            flush=True,
        )
        return run

    # --- cost curves ---------------------------------------------------------------------

    def _sweep_run(
        self, server: RunningServer, url: str, script: Path, connections: int
    ) -> WrkResult:
        duration = self.args.curve_duration
        for seconds in (max(1.0, duration / 3), duration):  # a warm-up, then the timed run
            command = wrk_command(
                url, script, duration_s=seconds, connections=connections, cpus=self.wrk_cpus
            )
            result = run_wrk(command)
        print(
            f"bench: curve {server.spec.name} {url.removeprefix(server.base_url)} {script.name} "
            f"c={connections}: {result.requests_per_s:,.1f} req/s, "
            f"p99 {result.latency_p99_us / 1000:.2f} ms",
            flush=True,
        )
        if not result.valid:
            self.problems.append(
                f"curve {server.spec.name} {script.name} c={connections}: {result}"
            )
        return result

    def curves(self, workdir: Path) -> None:
        """The cost curves (:mod:`benchmarks.curves`): rows per request, then connections."""
        scripts = write_row_bodies(workdir, self.rows)
        single = self.scripts["encode-1"]
        for spec in (s for s in SERVERS if s.name in (NOOP, SERVICE)):
            with start_server(spec, cwd=ROOT, cpus=self.server_cpus) as server:
                with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
                    self.check_answers_of(spec.name, client)
                    if spec.name == SERVICE:
                        check_curve_answers(
                            client, self.rows, lambda X: reference_answers(self.model, X)
                        )
                for c in CONNECTIONS:
                    result = self._sweep_run(server, server.base_url + "/encode", single, c)
                    self.curve_points.append(
                        CurvePoint("connections", spec.name, "/encode", "JSON", 1, c, result)
                    )
                if spec.name != SERVICE:
                    continue
                for (path, body_format, n), (script, _) in scripts.items():
                    result = self._sweep_run(
                        server, server.base_url + path, script, ROW_CONNECTIONS
                    )
                    self.curve_points.append(
                        CurvePoint("rows", SERVICE, path, body_format, n, ROW_CONNECTIONS, result)
                    )

    def bench_server(self, spec: ServerSpec) -> None:
        """Start one server, check its answers, time its workloads, read its memory, stop it."""
        print(f"bench: starting {spec.name}: {' '.join(spec.argv)}", flush=True)
        with start_server(spec, cwd=ROOT, cpus=self.server_cpus) as server:
            figures = ServerFigures(startup_s=server.startup_s)
            self.figures.setdefault(spec.name, []).append(figures)
            print(f"bench: {spec.name} ready in {server.startup_s:.3f} s", flush=True)
            skip = self.check_server(server)
            print(f"bench: {spec.name} answers checked", flush=True)
            mine = [w for w in self.workloads if spec.name in w.servers and w.key not in skip]
            for workload in mine:
                if not workload.shared:
                    self.runs.append(self.time_workload(server, workload))
            shared = [w for w in mine if w.shared]
            if shared and self.server_cpus is not None:
                unpin(server.process.pid)
                for workload in shared:
                    self.runs.append(self.time_workload(server, workload))
            memory = server.memory_mb()
            figures.rss_mb, figures.peak_rss_mb = memory["rss_mb"], memory["peak_rss_mb"]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _meta(
    args: argparse.Namespace, bench: Bench, load_at_start: float, commit: str
) -> dict[str, Any]:
    return {
        "git": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "load_average_at_start": load_at_start,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "wrk": wrk_version(),
        "packages": {
            p: _version(p)
            for p in ("fastapi", "starlette", "uvicorn", "pydantic", "numpy", "orjson")
        },
        # uvicorn's "auto" picks httptools/uvloop only when installed; h11/asyncio otherwise.
        "uvicorn_http": "httptools" if _version("httptools") != "not installed" else "h11",
        "uvicorn_loop": "uvloop" if _version("uvloop") != "not installed" else "asyncio",
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server_cpus": bench.server_cpus,
        "wrk_cpus": bench.wrk_cpus,
        "wrk_threads": 1,
        "rows": str(TEST_FILE) if TEST_FILE.is_file() else "synthetic",
        "load_average_at_end": load_average(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    add_run_options(parser, duration=6.0, json=DEFAULT_JSON)
    parser.add_argument("--batch", type=int, default=1000, help="vectors per JSON batch")
    parser.add_argument("--npy-batch", type=int, default=10_000, help="vectors per .npy batch")
    parser.add_argument("--connections", type=int, default=8, help="single-vector connections")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is not met")
    parser.add_argument(
        "--curve-duration", type=float, default=3.0, help="seconds per cost-curve point"
    )
    parser.add_argument("--no-curves", action="store_true", help="skip the cost curves")
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"write the JSON and pictures to {PUBLISHED} and the tables into README.md",
    )
    args = parser.parse_args(argv)
    if args.batch > args.npy_batch:
        parser.error("--batch must not exceed --npy-batch")
    check_run_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commit = git_commit(ROOT)
    ensure_wrk()
    load = load_average()
    if load > 0.5:
        print(
            f"bench: WARNING: load average is {load:.2f} before starting; other processes "
            "compete for the CPUs and the figures will be noisy",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="digitcode-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        print(
            f"bench: server on CPU {bench.server_cpus}, wrk on CPU {bench.wrk_cpus}"
            if bench.server_cpus
            else "bench: no CPU pinning",
            flush=True,
        )
        try:
            for round_number in range(1, args.rounds + 1):
                print(f"bench: round {round_number} of {args.rounds}", flush=True)
                for spec in SERVERS:
                    bench.bench_server(spec)
            if not args.no_curves:
                print("bench: cost curves", flush=True)
                bench.curves(Path(tmp))
        except (AnswerMismatchError, ServerError, WrkError) as exc:
            bench.problems.append(f"aborted: {exc}")
            print(f"bench: ABORTED: {exc}", file=sys.stderr, flush=True)
        runs = median_runs(bench.runs)
        servers = {name: merge_figures(rounds) for name, rounds in bench.figures.items()}
        targets = evaluate_targets(runs, servers)
        print()
        print(format_report(runs, servers, targets))
        meta = _meta(args, bench, load, commit)
        report = report_dict(meta, runs, servers, targets, bench.problems)
        report["curves"] = [point.as_dict() for point in bench.curve_points]
    out = PUBLISHED if args.publish else args.json.parent
    path = PUBLISHED / "bench.json" if args.publish else args.json
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nbench: wrote {path}")
    if report["curves"]:
        for picture in plot_curves(report["curves"], out, picture_title(report)):
            print(f"bench: drew {picture}")
    if args.publish:
        update_readme(README, report)
        print(f"bench: rewrote the tables in {README}")
    for problem in bench.problems:
        print(f"bench: PROBLEM: {problem}", file=sys.stderr)
    if bench.problems:
        return 1
    return 1 if args.strict and not report["all_targets_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
