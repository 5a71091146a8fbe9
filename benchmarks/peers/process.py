"""Starting a server that may be several processes, measuring it, and stopping all of them.

The peers are not one process: ``mlflow models serve`` runs uvicorn as a child, ``bentoml
serve`` a supervisor and a worker, LitServe an HTTP server process and an inference worker per
API. Each server is therefore started in a session of its own (``start_new_session``), so that
every process it spawns can be found (same session id in ``/proc/PID/stat``) and stopped by its
own PID afterwards, and its memory is read for each process of its tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import (
    RunningServer,
    ServerError,
    ServerSpec,
    free_port,
    server_environment,
    wait_ready,
)

__all__ = [
    "ProcessMemory",
    "RunningPeer",
    "session_members",
    "start_peer",
    "tree_memory",
]

_POLL_S = 0.01


@dataclass(frozen=True)
class ProcessMemory:
    """One process of a server and its resident memory.

    Attributes
    ----------
    pid : int
    command : str
        Its command line, shortened.
    rss_mb : float
        ``VmRSS`` in MB (10^6 bytes).
    """

    pid: int
    command: str
    rss_mb: float


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp, session...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def session_members(session: int) -> list[int]:
    """PIDs of the live processes whose session id is ``session`` (zombies excluded)."""
    members = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z" and int(fields[3]) == session:
            members.append(pid)
    return sorted(members)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def _command(pid: int, width: int = 100) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    words = [
        Path(w).name if i == 0 else w
        for i, w in enumerate(raw.decode(errors="replace").split("\0"))
        if w
    ]
    text = " ".join(words)
    return text if len(text) <= width else text[: width - 1] + "…"


def tree_memory(root: int) -> list[ProcessMemory]:
    """``VmRSS`` of ``root`` and every live descendant, by PID."""
    memory = []
    for pid in _descendants(root):
        rss = _rss_mb(pid)
        if rss is not None:
            memory.append(ProcessMemory(pid, _command(pid), rss))
    return memory


@dataclass
class RunningPeer(RunningServer):
    """A started server of several processes: :class:`RunningServer` whose memory is that of
    every process in its session."""

    def memory(self) -> list[ProcessMemory]:
        """The memory of every process of the server (see :func:`tree_memory`).

        Raises
        ------
        ServerError
            If the top process has exited.
        """
        if self.process.poll() is not None:
            raise ServerError(f"{self.spec.name} exited with {self.process.returncode}")
        return tree_memory(self.process.pid)


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)


def _stop_session(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM every process of the server's session by PID; SIGKILL what is left after a while."""
    session = process.pid
    _signal_all(session_members(session), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None and not session_members(session):
            return
        time.sleep(0.05)
    _signal_all(session_members(session), signal.SIGKILL)
    process.wait()


@contextmanager
def start_peer(
    spec: ServerSpec,
    *,
    ready_path: str,
    cwd: Path,
    cpus: str | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[RunningPeer]:
    """Start ``spec`` in a session of its own on a free port; wait for ``ready_path``; stop all.

    Parameters
    ----------
    spec : ServerSpec
        Command and extra environment (``{port}`` replaced); the environment is
        :func:`benchmarks.servers.server_environment`'s: one BLAS thread, no inherited
        ``DIGITCODE_*`` variable.
    ready_path : str
        The health or readiness route; start-up is the time from spawning the server to the
        first 200 there.
    cwd : Path
        Working directory of the server.
    cpus : str, optional
        Pin the server (and so every process it starts) to these CPUs with ``taskset -c``.
    ready_timeout_s : float
        Give up (:class:`ServerError`, with the end of its log) after this long.
    """
    port = free_port()
    argv = [arg.replace("{port}", str(port)) for arg in spec.argv]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    env = server_environment(spec, port)
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix=f"bench-peers-{spec.name}-", suffix=".log", delete=False
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    peer = RunningPeer(spec, process, port, 0.0, Path(log.name))
    try:
        try:
            wait_ready(
                process,
                f"{peer.base_url}{ready_path}",
                ready_timeout_s,
                request_timeout_s=2.0,
                poll_s=_POLL_S,
            )
        except ServerError as exc:
            raise ServerError(f"{spec.name}: {exc}\n{peer.log_tail()}") from None
        peer.startup_s = time.perf_counter() - started
        yield peer
    finally:
        _stop_session(process)
        log.close()
        os.unlink(log.name)
