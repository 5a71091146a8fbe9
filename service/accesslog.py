"""The access log: one line per request on stderr, written off the event loop.

The lines are those :class:`service.observability.JsonFormatter` would write for a record of
the ``digitcode.access`` logger (the same fields in the same order, or the same plain-text
line), but they do not go through :mod:`logging`: a ``LogRecord``, the handler's lock, the
formatter and ``json.dumps`` cost about 46 µs a line, more than parsing, the forward pass and
the answer of a one-vector request together. Here a line is a few string joins on the event
loop (about 3 µs) and a list append; a daemon thread writes what has piled up, at most every
:data:`WRITE_INTERVAL_S`, in writes of whole lines, so a slow reader of stderr never blocks the
event loop. If stderr is not read at all, at most ``max_pending`` lines wait; further ones are
dropped, counted, and reported by a warning line once writing resumes.

Whether a line is written at all still follows the ``digitcode.access`` logger's level
(``DIGITCODE_LOG_LEVEL``), checked per request.
"""

from __future__ import annotations

import atexit
import errno
import json.encoder
import logging
import os
import select
import threading
import time
from datetime import UTC, datetime

__all__ = ["ACCESS_LOG", "ACCESS_LOGGER", "EXIT_FLUSH_TIMEOUT_S", "WRITE_INTERVAL_S", "AccessLog"]

ACCESS_LOGGER = "digitcode.access"
WRITE_INTERVAL_S = 0.1  # 0.01 gave 2.6x the context switches under load, for no line sooner needed
_BLOCKED_S = 5.0  # how long a write waits for a full non-blocking stderr before giving up
EXIT_FLUSH_TIMEOUT_S = 5.0  # the longest the last flush may take, at exit
_PIPE_BUF = 4096  # a write of at most this many bytes to a pipe is never interleaved
_KEPT = 256  # distinct (method, path) and (model, version) pairs whose JSON is kept
_quote = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str


class AccessLog:
    """Access log lines, formatted on the caller's thread and written by a background one.

    Parameters
    ----------
    fd : int
        File descriptor the lines are written to (2, stderr).
    fmt : {"json", "plain"}
        One JSON object per line, or ``time INFO digitcode.access message``.
    max_pending : int
        Lines waiting to be written beyond which new ones are dropped (and counted).
    """

    def __init__(self, fd: int = 2, fmt: str = "json", max_pending: int = 100_000) -> None:
        self.fd = fd
        self.json = fmt == "json"
        self.max_pending = max_pending
        self.dropped_total = 0  # lines dropped (counted by the event loop's thread)
        self._reported = 0  # of which a warning line said so (the writer's count)
        self._lines: list[str] = []
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._millis = -1
        self._second = -1
        self._prefix = ""
        self._stamp = ""
        self._quoted: dict[tuple[str, str], str] = {}
        self._requests: dict[tuple[str, str], tuple[str, str]] = {}

    def configure(self, fd: int, fmt: str) -> None:
        """Write to ``fd`` in format ``fmt`` from now on (lines waiting are written first)."""
        self.flush()
        self.fd, self.json = fd, fmt == "json"
        self._millis = self._second = -1

    # --- the event loop's side ---------------------------------------------------------

    def _time(self, now: float) -> str:
        """``now`` as the formatter writes it (the date and time to the second are formatted
        once a second, the whole stamp once a millisecond: lines come faster)."""
        millis = int(now * 1000)
        if millis == self._millis:
            return self._stamp
        second, fraction = divmod(millis, 1000)
        if second != self._second:
            self._second = second
            if self.json:
                self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:  # logging.Formatter's default asctime: local time, then ",mmm"
                self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        if self.json:
            stamp = f"{self._prefix}.{fraction:03d}+00:00"
        else:
            stamp = f"{self._prefix},{fraction:03d}"
        self._millis, self._stamp = millis, stamp
        return stamp

    def _model(self, model: str, version: str) -> str:
        """The ``model`` and ``model_version`` fields (few distinct pairs: kept)."""
        quoted = self._quoted.get((model, version))
        if quoted is None:
            name = _quote(model) if model else "null"
            number = _quote(version) if version else "null"
            quoted = f'"model": {name}, "model_version": {number}'
            if len(self._quoted) < _KEPT:
                self._quoted[(model, version)] = quoted
        return quoted

    def _request(self, method: str, path: str) -> tuple[str, str]:
        """The JSON before and after the status in ``"message": "POST /encode 200", "method":
        "POST", "path": "/encode", "status": 200`` (the few API paths are kept)."""
        parts = self._requests.get((method, path))
        if parts is None:
            message = _quote(f"{method} {path} ")[:-1]  # without its closing quote
            parts = (
                f'"message": {message}',
                f'", "method": {_quote(method)}, "path": {_quote(path)}, "status": ',
            )
            if len(self._requests) < _KEPT:
                self._requests[(method, path)] = parts
        return parts

    def line(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        vectors: int,
        request_id: str,
        model: str,
        version: str,
        now: float | None = None,
    ) -> str:
        """One request's line, without the newline.

        Parameters
        ----------
        method, path : str
            The request's method and (decoded) path.
        status : int
            The answer's status.
        seconds : float
            Time from receiving the request to the end of its answer.
        vectors : int
            Vectors or codes the request carried (0 for others).
        request_id, model, version : str
            ``X-Request-ID``, and the model and version that answered (``""``: none).
        now : float, optional
            The time stamped on the line (default: now).
        """
        stamp = self._time(time.time() if now is None else now)
        if not self.json:
            return f"{stamp} INFO {ACCESS_LOGGER} {method} {path} {status}"
        message, fields = self._request(method, path)
        return (
            f'{{"time": "{stamp}", "level": "info", "logger": "{ACCESS_LOGGER}", {message}'
            f'{status}{fields}{status}, "duration_ms": {round(seconds * 1000, 3)!r}, '
            f'"vectors": {vectors}, "request_id": {_quote(request_id)}, '
            f"{self._model(model, version)}}}"
        )

    def write(self, line: str) -> None:
        """Queue one line (without its newline); the writer thread writes it soon."""
        lines = self._lines
        if len(lines) >= self.max_pending:
            self.dropped_total += 1  # only this thread counts; the writer reports the growth
            return
        lines.append(line)
        if not self._wake.is_set():
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._wake.set()

    # --- the writer's side ---------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="digitcode-access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(WRITE_INTERVAL_S)  # let lines pile up: one write for many
            # Cleared before the lines are taken: a line queued after this sets it again.
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every line queued so far (from any thread; the writer thread does it too)."""
        with self._write_lock:
            lines, self._lines = self._lines, []
            dropped = self.dropped_total - self._reported
            if dropped:
                lines.append(self._dropped_line(dropped))
                self._reported += dropped
            if lines:
                self._write_all(lines)

    def flush_at_exit(self, timeout: float = EXIT_FLUSH_TIMEOUT_S) -> bool:
        """:meth:`flush`, waited for at most ``timeout`` seconds: at exit, where a stderr that
        nobody reads (a blocking write, or the writer thread stuck in one) must not keep the
        process from ending. Returns whether it finished; if not, the lines are written only
        if a reader comes before the process has ended."""
        flusher = threading.Thread(target=self.flush, name="digitcode-access-log-exit", daemon=True)
        flusher.start()
        flusher.join(timeout)
        return not flusher.is_alive()

    @property
    def dropped(self) -> int:
        """Lines dropped and not yet reported by a warning line."""
        return self.dropped_total - self._reported

    def _dropped_line(self, dropped: int) -> str:
        message = f"{dropped} access log lines dropped: stderr was not read fast enough"
        now = datetime.now(UTC)
        if not self.json:  # the writer's own stamp: the formatting caches are the loop's
            stamp = now.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            return f"{stamp},{now.microsecond // 1000:03d} WARNING {ACCESS_LOGGER} {message}"
        return (
            f'{{"time": "{now.isoformat(timespec="milliseconds")}", "level": "warning", '
            f'"logger": "{ACCESS_LOGGER}", "message": "{message}", "dropped": {dropped}}}'
        )

    def _write_all(self, lines: list[str]) -> None:
        """Write ``lines`` in chunks of whole lines of at most a pipe buffer where possible.

        Once a chunk could not be written, the later ones are dropped at once (and reported
        by the next flush) rather than each waiting for a stderr that is stuck.
        """
        chunk: list[bytes] = []
        size = 0
        for i, text in enumerate(lines):
            data = text.encode("utf-8", "replace") + b"\n"
            if chunk and size + len(data) > _PIPE_BUF:
                lost = self._write(b"".join(chunk))
                if lost:  # reported as dropped next: these and lines[i:]
                    self._reported -= lost + len(lines) - i
                    return
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        if chunk:
            self._reported -= self._write(b"".join(chunk))

    def _write(self, data: bytes) -> int:
        """Write ``data``; return how many of its lines were given up (0: all written)."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except InterruptedError:
                continue
            except BlockingIOError:  # a non-blocking stderr that is full: wait, keep the order
                if not select.select([], [self.fd], [], _BLOCKED_S)[1]:
                    return view.tobytes().count(b"\n")
            except OSError as exc:  # stderr closed: nothing can be logged any more
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    logging.getLogger("digitcode").warning("access log write failed: %s", exc)
                return 0
        return 0


ACCESS_LOG = AccessLog()
atexit.register(ACCESS_LOG.flush_at_exit)
