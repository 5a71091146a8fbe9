"""Starting one server at a time on loopback and measuring its start-up and memory.

Start-up is the time from spawning the process to the first 200 on ``GET /readyz``; memory is
the worker's resident set (``VmRSS`` in ``/proc/PID/status``). Every server runs as one process
with one uvicorn worker, so the spawned process *is* the worker (``taskset`` execs its command),
with one BLAS thread unless the environment says otherwise (:func:`server_environment`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.tuning import limit_blas_threads

__all__ = [
    "HOST",
    "RunningServer",
    "ServerError",
    "ServerSpec",
    "free_port",
    "memory_mb",
    "server_environment",
    "start_server",
    "unpin",
    "wait_ready",
]

HOST = "127.0.0.1"
_POLL_S = 0.005


class ServerError(RuntimeError):
    """A server did not start, did not become ready, or died."""


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server.

    Attributes
    ----------
    name : str
        Short name used in the report (``noop``, ``straightforward``, ``digitcode``).
    argv : list of str
        Command line; ``{port}`` in any argument is replaced by the chosen port.
    env : mapping
        Extra environment variables (the only ``DIGITCODE_*`` ones the server sees); ``{port}``
        in a value is replaced too. See :func:`server_environment`.
    """

    name: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RunningServer:
    """A started server: its process, address and start-up time."""

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    startup_s: float
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def memory_mb(self) -> dict[str, float]:
        """Current (``VmRSS``) and peak (``VmHWM``) resident memory in MB (10^6 bytes)."""
        if self.process.poll() is not None:
            raise ServerError(f"{self.spec.name} exited with {self.process.returncode}")
        return memory_mb(self.process.pid)


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of a process, in MB (10^6 bytes), from ``/proc/PID/status``."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                kib = int(rest.split()[0])
                values["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = kib * 1024 / 1e6
    return values


def wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    timeout_s: float,
    *,
    request_timeout_s: float = 1.0,
    poll_s: float = _POLL_S,
) -> None:
    """Poll ``url`` until it answers 200; ``ServerError`` if ``process`` exits or time runs out."""
    deadline = time.perf_counter() + timeout_s
    with httpx.Client(timeout=request_timeout_s) as client:
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise ServerError(f"exited with {process.returncode} before becoming ready")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(poll_s)
    raise ServerError(f"{url} did not answer 200 within {timeout_s:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def server_environment(
    spec: ServerSpec, port: int, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The environment ``spec`` is started with on ``port``.

    ``environ`` without its ``DIGITCODE_*`` variables (an inherited API key or smaller batch
    limit would change what is measured), then the spec's own variables, then one BLAS thread
    (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` = 1) where neither set
    one: the worker's numpy would otherwise start a BLAS thread per CPU, and those fight the
    other requests (and, unpinned, wrk) for the cores. The service sets the same itself when
    started as ``python -m service``; the baselines do not.
    """
    inherited = {k: v for k, v in environ.items() if not k.startswith("DIGITCODE_")}
    env = {**inherited, **{k: v.replace("{port}", str(port)) for k, v in spec.env.items()}}
    limit_blas_threads(env)
    return env


@contextmanager
def start_server(
    spec: ServerSpec,
    *,
    cwd: Path,
    cpus: str | None = None,
    ready_timeout_s: float = 30.0,
) -> Iterator[RunningServer]:
    """Start ``spec`` on a free loopback port, wait for ``/readyz``, stop it on exit.

    Parameters
    ----------
    spec : ServerSpec
    cwd : Path
        Working directory of the server (the repository root).
    cpus : str, optional
        Pin the server to these CPUs with ``taskset -c`` (e.g. ``"0"``).
    ready_timeout_s : float
        Give up (``ServerError``) if ``/readyz`` does not answer 200 within this time.
    """
    port = free_port()
    argv = [arg.replace("{port}", str(port)) for arg in spec.argv]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    env = server_environment(spec, port)
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix=f"bench-{spec.name}-", suffix=".log", delete=False
    )
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(spec, process, port, 0.0, Path(log.name))
    try:
        try:
            wait_ready(process, f"{server.base_url}/readyz", ready_timeout_s)
        except ServerError as exc:
            raise ServerError(f"{spec.name}: {exc}\n{server.log_tail()}") from None
        server.startup_s = time.perf_counter() - started
        yield server
    finally:
        _stop(process)
        log.close()
        os.unlink(log.name)


def unpin(pid: int) -> None:
    """Let every thread of process ``pid`` run on every CPU again (after ``taskset``)."""
    everywhere = set(range(os.cpu_count() or 1))
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), everywhere)


def python_argv(*args: str) -> list[str]:
    """A command line running this interpreter with ``args``."""
    return [sys.executable, *args]
