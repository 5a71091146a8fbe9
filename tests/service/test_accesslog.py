"""The access log writer: the same lines the logging formatters write, off the event loop."""

from __future__ import annotations

import json
import logging
import os
import select as select_module
import time
from collections.abc import Iterator

import pytest

from service.accesslog import ACCESS_LOGGER, AccessLog
from service.observability import JsonFormatter

FIELDS = ("POST", '/v2/models/dé"jà\\/infer', 201, 0.0012345, 3, "r-1", "digitcode", "716cc2c4")


def _record(now: float) -> logging.LogRecord:
    """What the middleware used to log through ``logging`` for :data:`FIELDS`."""
    method, path, status, seconds, vectors, request_id, model, version = FIELDS
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "%s %s %d", None, None)
    record.args = (method, path, status)
    record.created = now
    record.msecs = (now - int(now)) * 1000
    extra = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "vectors": vectors,
        "request_id": request_id,
        "model": model,
        "model_version": version,
    }
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("now", [1_764_523_201.0, 1_764_523_201.0995, 1_764_523_259.999])
def test_json_line_is_what_the_json_formatter_writes(now):
    line = AccessLog(fmt="json").line(*FIELDS, now=now)
    assert line == JsonFormatter().format(_record(now))
    assert json.loads(line)["path"] == FIELDS[1]


def test_plain_line_is_what_the_plain_formatter_writes():
    now = 1_764_523_201.25
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    assert AccessLog(fmt="plain").line(*FIELDS, now=now) == formatter.format(_record(now))


def test_no_model_is_null():
    fields = json.loads(AccessLog().line("GET", "/nothing", 404, 0.001, 0, "x", "", ""))
    assert (fields["model"], fields["model_version"]) == (None, None)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe's read and write ends, closed after the test."""
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


def _read_lines(fd: int, count: int, deadline_s: float = 10.0) -> list[str]:
    """Read from pipe ``fd`` until ``count`` lines came, or fail at the deadline."""
    os.set_blocking(fd, False)
    data = b""
    deadline = time.monotonic() + deadline_s
    while data.count(b"\n") < count:
        try:
            data += os.read(fd, 1 << 16)
        except BlockingIOError:
            if time.monotonic() > deadline:
                got = data.count(b"\n")
                pytest.fail(f"only {got} of {count} lines written: {data[-200:]!r}")
            time.sleep(0.005)
    return data.decode().splitlines()


def test_the_writer_thread_writes_queued_lines_in_order(pipe):
    read, write = pipe
    log = AccessLog(fd=write)
    for i in range(500):
        log.write(log.line("GET", f"/n/{i}", 200, 0.001, 0, str(i), "m", "v"))
    lines = _read_lines(read, 500)  # no flush(): the writer thread's work
    assert [json.loads(line)["request_id"] for line in lines] == [str(i) for i in range(500)]


def test_lines_beyond_the_pending_limit_are_dropped_and_reported(pipe):
    read, write = pipe
    log = AccessLog(fd=write, max_pending=10)
    log._wake.set()  # as if the writer were busy: nothing is taken while the lines come
    for i in range(25):
        log.write(str(i))
    assert log.dropped == 15
    log.flush()
    lines = _read_lines(read, 11)
    assert lines[:10] == [str(i) for i in range(10)]
    warning = json.loads(lines[10])
    assert (warning["level"], warning["dropped"]) == ("warning", 15)
    assert log.dropped == 0 and log.dropped_total == 15


def test_writes_are_whole_lines_of_at_most_a_pipe_buffer(monkeypatch):
    writes: list[bytes] = []

    def write(fd: int, data: memoryview) -> int:
        writes.append(bytes(data))
        return len(data)

    monkeypatch.setattr(os, "write", write)
    log = AccessLog(fd=99)
    lines = [str(i) * 300 for i in range(40)]  # 12 kB
    log._lines.extend(lines)
    log.flush()
    assert len(writes) > 1
    assert all(len(w) <= 4096 and w.endswith(b"\n") for w in writes)
    assert b"".join(writes).decode().splitlines() == lines


def test_a_full_non_blocking_stderr_loses_lines_whole_and_counts_them(monkeypatch, pipe):
    import service.accesslog as module

    monkeypatch.setattr(module, "_BLOCKED_S", 0.05)
    read, write = pipe
    os.set_blocking(write, False)
    filler = b"x" * 65536
    while True:  # fill the pipe
        try:
            os.write(write, filler)
        except BlockingIOError:
            break
    log = AccessLog(fd=write)
    log._lines.extend(["a" * 100] * 3)
    log.flush()  # nothing can be written: given up after 50 ms
    assert log.dropped == 3
    os.set_blocking(read, False)
    while True:  # the reader catches up
        try:
            os.read(read, 1 << 20)
        except BlockingIOError:
            break
    log.write("b")
    log.flush()
    lines = _read_lines(read, 2)
    assert lines[0] == "b"  # nothing of the lost lines was written: no broken line
    warning = json.loads(lines[1])
    assert warning["dropped"] == 3 and log.dropped == 0


def _fill(fd: int) -> None:
    """Fill the pipe whose write end is ``fd`` (left non-blocking)."""
    os.set_blocking(fd, False)
    while True:
        try:
            os.write(fd, b"x" * 65536)
        except BlockingIOError:
            return


def test_a_stuck_stderr_is_waited_for_once_per_flush_not_once_per_chunk(monkeypatch, pipe):
    import service.accesslog as module

    waits: list[float] = []

    def select(rlist: list[int], wlist: list[int], xlist: list[int], timeout: float) -> tuple:
        waits.append(timeout)
        return [], [], []  # still full after the whole wait

    monkeypatch.setattr(select_module, "select", select)
    _, write = pipe
    _fill(write)
    log = AccessLog(fd=write)
    log._lines.extend(["a" * 99] * 400)  # 40 kB: ten chunks, each would wait 5 s
    log.flush()
    assert waits == [module._BLOCKED_S]
    assert log.dropped == 400


def test_the_last_flush_gives_up_on_a_stderr_nobody_reads(pipe):
    read, write = pipe
    _fill(write)
    os.set_blocking(write, True)  # as stderr usually is: a write waits for the reader
    log = AccessLog(fd=write)
    log.write("last")
    started = time.monotonic()
    assert log.flush_at_exit(timeout=0.2) is False  # flush() would wait for ever
    assert time.monotonic() - started < 5
    lines = _read_lines(read, 1)  # a reader at last: the given-up flush finishes
    assert len(lines) == 1 and lines[0].lstrip("x") == "last"  # after the filler: not lost
