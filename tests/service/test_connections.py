"""Slow and oversized clients against one real worker (``python -m service``): cut, not served.

Each test runs attackers on raw sockets and, at the same time, normal single-vector requests,
which must keep succeeding. The server's limits are its defaults unless a test says otherwise
(service/settings.py; the README's "Reliability and security" table).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import resource
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import rss_mib, running_service

pytestmark = pytest.mark.slow

ONE = {"vectors": [[1.0] * 64]}
BODY_GRACE = 5.0  # the defaults (Settings.body_grace, body_min_rate, max_header_bytes)
BODY_MIN_RATE = 240.0


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors() -> None:
    """Room for a thousand connections at each end (the server inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    settings = {"DIGITCODE_WORKERS": "1", "DIGITCODE_LOG_LEVEL": "warning"}
    settings |= getattr(request, "param", {})
    with running_service(settings) as (process, url):
        yield process.pid, url


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def normal_traffic(
    url: str, stop: asyncio.Event, at_least: float = 3.0
) -> list[tuple[int, float]]:
    """Single-vector ``/encode`` requests one after another until ``stop``: (status, seconds).

    For ``at_least`` seconds in any case, so there are enough to judge.
    """
    results: list[tuple[int, float]] = []
    until = time.perf_counter() + at_least
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not stop.is_set() or time.perf_counter() < until:
            started = time.perf_counter()
            try:
                status = (await client.post("/encode", json=ONE)).status_code
            except httpx.HTTPError:
                status = 0
            results.append((status, time.perf_counter() - started))
            await asyncio.sleep(0.005)
    return results


def assert_served(results: list[tuple[int, float]], p99_limit: float = 0.1) -> None:
    statuses = [status for status, _ in results]
    ok = statuses.count(200) / len(statuses)
    p99 = float(np.percentile([seconds for _, seconds in results], 99))
    assert len(results) >= 50, len(results)
    assert ok >= 0.99, f"{ok:.3f} of {len(results)} normal requests succeeded"
    assert p99 < p99_limit, f"p99 {p99 * 1000:.0f} ms"


async def read_answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


async def trickle(
    url: str,
    head: bytes,
    parts: Iterable[bytes],
    interval: float,
    stop: asyncio.Event | None = None,
) -> tuple[bytes, float]:
    """Send ``head``, then one of ``parts`` every ``interval`` s until the server answers.

    Returns what the server sent until it closed, and the seconds from the end of ``head`` to
    its answer.
    """
    reader, writer = await asyncio.open_connection(*host_port(url))
    writer.write(head)
    started = time.perf_counter()
    answer = asyncio.ensure_future(reader.read())
    try:
        for part in parts:
            if answer.done() or (stop is not None and stop.is_set()):
                break
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait([answer], timeout=interval)
        data = await asyncio.wait_for(answer, 10)
        return data, time.perf_counter() - started
    finally:
        writer.close()


async def trickle_body(url: str, stop: asyncio.Event, length: int) -> tuple[bytes, float]:
    """Headers of a ``length``-byte ``/encode``, then one body byte a second.

    Returns the answer and the seconds from the headers to it.
    """
    head = (
        b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )
    return await trickle(url, head, itertools.repeat(b" "), 1.0, stop)


@pytest.mark.parametrize("length", [1000, 1_000_000], ids=["1 kB", "1 MB"])
def test_a_thousand_slow_bodies_are_cut_and_deny_no_one(server, length):
    _, url = server

    async def scenario():
        stop = asyncio.Event()
        normal = asyncio.create_task(normal_traffic(url, stop))
        slow = [asyncio.create_task(trickle_body(url, stop, length)) for _ in range(1000)]
        done = await asyncio.wait_for(asyncio.gather(*slow), 60)
        await asyncio.sleep(1)  # normal traffic after the cut too
        stop.set()
        return await normal, done

    normal, slow = asyncio.run(scenario())
    assert_served(normal)
    late = [seconds for _, seconds in slow if seconds > BODY_GRACE + 3]
    assert not late, f"{len(late)} slow connections cut after {max(late):.1f} s"
    # One answer per request, and every connection closed (read() returned at its end).
    assert all(data.count(b"HTTP/1.1 ") == 1 for data, _ in slow)
    first_lines = Counter(data.split(b"\r\n", 1)[0] for data, _ in slow)
    if length == 1000:
        # All fit the memory budget (1 000 x 70 KiB): each is cut for its rate, with 408.
        assert first_lines == {b"HTTP/1.1 408 Request Timeout": 1000}, first_lines
        body = slow[0][0].split(b"\r\n\r\n", 1)[1]
        assert b"slower than 240 bytes/s" in body and b'"loc":["body"]' in body
    else:
        # Each declares 1 MB: the first ones fit the budget and are cut with 408; the rest are
        # refused at once with 503 (before any body is buffered), and closed all the same.
        assert set(first_lines) == {
            b"HTTP/1.1 408 Request Timeout",
            b"HTTP/1.1 503 Service Unavailable",
        }, first_lines


async def send_headers(url: str, total: int, chunk: int = 64 * 1024) -> bytes:
    """A request whose header lines add up to ``total`` bytes; what came back."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    block = line * (chunk // len(line))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        while sent < total:
            writer.write(block)
            await writer.drain()
            sent += len(block)
        writer.write(b"\r\n")
        await writer.drain()
    except ConnectionError:
        pass  # cut while sending: what it answered is still readable
    try:
        return await read_answer(reader, 10)
    except ConnectionError:
        return b"(reset)"
    finally:
        writer.close()


def test_two_hundred_1_mb_headers_are_refused_with_431_and_cost_no_memory(server):
    pid, url = server
    idle = rss_mib(pid)

    async def scenario():
        stop = asyncio.Event()
        normal = asyncio.create_task(normal_traffic(url, stop))
        answers = await asyncio.gather(*[send_headers(url, 1 << 20) for _ in range(200)])
        stop.set()
        return await normal, answers

    normal, answers = asyncio.run(scenario())
    assert_served(normal)
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 431 ")]
    cut = [a for a in answers if a in (b"", b"(reset)")]
    assert len(refused) + len(cut) == 200, {a[:40] for a in answers}
    assert refused, "no connection was told why"
    assert b"exceed the limit of 16384 bytes" in refused[0]
    growth = rss_mib(pid, "VmHWM") - idle
    assert growth < 20, f"peak RSS grew by {growth:.1f} MiB"


@pytest.mark.parametrize(
    "server", [{"DIGITCODE_HEADER_TIMEOUT": "2", "DIGITCODE_MAX_CONNECTIONS": "20"}], indirect=True
)
def test_slow_and_idle_headers_time_out_and_connections_are_bounded(server):
    _, url = server

    async def scenario():
        # Headers one byte every 0.5 s (a header line that never ends): cut at 2 s.
        slow, slow_after = await trickle(
            url, b"GET /healthz HTTP/1.1\r\nX-Slow: ", itertools.repeat(b"a"), 0.5
        )
        # A connection that sends nothing at all is closed without an answer.
        reader, writer = await asyncio.open_connection(*host_port(url))
        idle = await read_answer(reader, 5)
        writer.close()
        # 20 open connections (the limit); the 21st is refused at once, with a reason.
        held = [await asyncio.open_connection(*host_port(url)) for _ in range(20)]
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection(*host_port(url))
        over = await read_answer(reader, 1)
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=url) as client:
            after = (await client.post("/encode", json=ONE)).status_code
            metrics = (await client.get("/metrics")).text
        return slow, slow_after, idle, over, after, metrics

    slow, slow_after, idle, over, after, metrics = asyncio.run(scenario())
    # Refused before the app saw a request, so counted (and logged) by the guards themselves.
    refused = {}
    for labels, value in re.findall(r"digitcode_connections_refused_total\{(.*?)\} (\S+)", metrics):
        fields = dict(kv.split("=", 1) for kv in labels.replace('"', "").split(","))
        refused[fields["status"], fields["reason"]] = float(value)
    assert refused == {
        ("408", "header_timeout"): 1,
        ("408", "idle"): 1,
        ("503", "connection_limit"): 1,
    }
    assert slow.startswith(b"HTTP/1.1 408 "), slow
    assert b"not complete within 2 s" in slow
    assert 1.5 < slow_after < 4, slow_after
    assert idle == b""
    assert over.startswith(b"HTTP/1.1 503 "), over
    assert b"20 open connections" in over and b"retry-after: 1" in over.lower()
    assert after == 200


@pytest.mark.parametrize(
    "server", [{"DIGITCODE_BODY_TIMEOUT": "2", "DIGITCODE_BODY_MIN_RATE": "1"}], indirect=True
)
def test_a_body_over_the_total_timeout_is_cut_and_a_steady_one_is_not(server):
    _, url = server

    async def send(body: bytes, per_second: int) -> tuple[bytes, float]:
        head = (
            b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        step = per_second // 10
        return await trickle(
            url, head, (body[i : i + step] for i in range(0, len(body), step)), 0.1
        )

    body = b'{"vectors": [[' + b", ".join([b"1"] * 64) + b"]]}"  # 206 bytes
    # At 200 bytes/s: done in about 1 s. At 20 bytes/s it would take 10 s: cut at 2 s.
    steady, _ = asyncio.run(send(body, 200))
    cut, cut_after = asyncio.run(send(body, 20))
    assert steady.startswith(b"HTTP/1.1 200 "), steady[:200]
    assert cut.startswith(b"HTTP/1.1 408 ") and b"not complete within 2 s" in cut, cut[:300]
    assert 1.5 < cut_after < 4, cut_after
