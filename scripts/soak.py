"""Soak test: mixed valid and invalid traffic against a real server on loopback.

    python scripts/soak.py [--duration 60] [--concurrency 8]

Starts ``python -m service`` on a free port, warms it up until its resident memory settles
(at most six 5 s rounds), records it, then
sends a rotating mix of good requests and bad ones (wrong lengths, non-finite literals, wrong
content types, oversized batches, maximum-size bodies, pickled ``.npy``, unknown paths) for the
duration, while slow clients trickle request bodies at 1 byte/s (each must be cut with 408
within the body grace period and a few seconds). Every answer must have exactly the status its
request calls for. Exits non-zero when any answer is unexpected, any connection fails, or the
resident memory grew by 10 % or more.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MAX_BATCH = 1000
RSS_GROWTH_LIMIT = 0.10
WARMUP_ROUNDS = 6  # warm-up rounds at most ...
WARMUP_SETTLED = 0.02  # ... until one grows the resident memory by less than this
SLOW_CLIENTS = 20
SLOW_CUT_WITHIN = 5 + 3  # s: the default body grace period, and the sweep and some slack


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    expected: int
    content: bytes = b""
    content_type: str = "application/json"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _json_rows(rows: np.ndarray, key: str = "vectors") -> bytes:
    return json.dumps({key: rows.tolist()}).encode()


def probes() -> list[Probe]:
    rng = np.random.default_rng(0)
    digits = rng.integers(0, 17, size=(100, 64)).astype(np.float64)
    full_precision = rng.random((MAX_BATCH, 64)) * 16  # the largest body a batch can be
    one = _json_rows(digits[:1])
    nan_row = b'{"vectors": [[' + b",".join([b"1"] * 63 + [b"NaN"]) + b"]]}"
    return [
        Probe("encode 1 JSON", "POST", "/encode", 200, one),
        Probe("encode 100 JSON", "POST", "/encode", 200, _json_rows(digits)),
        Probe(
            "reconstruct 100 npy", "POST", "/reconstruct", 200, _npy(digits), "application/x-npy"
        ),
        Probe("decode JSON", "POST", "/decode", 200, b'{"latent": [[0.1, -0.2], [0.5, 0.5]]}'),
        Probe("model", "GET", "/model", 200),
        Probe("healthz", "GET", "/healthz", 200),
        Probe("short row", "POST", "/encode", 422, _json_rows(digits[:2, :63])),
        Probe("NaN literal", "POST", "/encode", 422, nan_row),
        Probe("value 17", "POST", "/reconstruct", 422, _json_rows(digits[:1] + 17)),
        Probe("string value", "POST", "/encode", 422, b'{"vectors": [["1"]]}'),
        Probe("invalid JSON", "POST", "/encode", 422, b'{"vectors": [[1, 2'),
        Probe("empty batch", "POST", "/decode", 422, b'{"latent": []}'),
        Probe("text/plain", "POST", "/encode", 415, one, "text/plain"),
        Probe("too many rows", "POST", "/encode", 413, _json_rows(np.ones((MAX_BATCH + 1, 64)))),
        Probe("maximum batch", "POST", "/reconstruct", 200, _json_rows(full_precision)),
        Probe(
            "pickled npy",
            "POST",
            "/encode",
            422,
            _npy(np.array([object()] * 2)),
            "application/x-npy",
        ),
        Probe("pickle bytes", "POST", "/encode", 422, pickle.dumps(digits), "application/x-npy"),
        Probe("unknown path", "GET", "/nowhere", 404),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def idle_rss_bytes(pid: int, quiet_s: float = 1.0, within_s: float = 15.0) -> int:
    """The resident memory once it has stopped changing for ``quiet_s`` (at most ``within_s``).

    Half a second after a burst of large requests the service hands its freed heap back
    (service/admission.py), so a reading taken right after traffic is before or after that
    release by chance: 75 and 83.5 MiB for the same heap in one CI run. Compare idle sizes.
    """
    deadline = time.monotonic() + within_s
    last, since = rss_bytes(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = rss_bytes(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


async def drive(url: str, seconds: float, concurrency: int) -> tuple[Counter[str], list[str]]:
    """Send the probe mix for ``seconds``; count answers, list the unexpected ones."""
    mix = probes()
    counts: Counter[str] = Counter()
    problems: list[str] = []
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            i = offset
            while time.monotonic() < deadline:
                probe = mix[i % len(mix)]
                i += 1
                try:
                    response = await client.request(
                        probe.method,
                        probe.path,
                        content=probe.content or None,
                        headers={"content-type": probe.content_type},
                    )
                except httpx.TransportError as exc:
                    counts["connection error"] += 1
                    problems.append(f"{probe.name}: {type(exc).__name__}: {exc}")
                    continue
                counts[str(response.status_code)] += 1
                if response.status_code != probe.expected:
                    problems.append(
                        f"{probe.name}: expected {probe.expected}, got {response.status_code}"
                    )

    async def slow_client(host: str, port: int) -> None:
        """Bodies at 1 byte/s, one connection after another: each must be cut with 408."""
        while time.monotonic() < deadline - SLOW_CUT_WITHIN:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /encode HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10000\r\n\r\n"
            )
            started = time.monotonic()
            answer = asyncio.ensure_future(reader.read())
            while not answer.done() and time.monotonic() - started < SLOW_CUT_WITHIN:
                try:
                    writer.write(b" ")
                    await writer.drain()
                except ConnectionError:
                    break
                await asyncio.wait([answer], timeout=1.0)
            try:
                data = await asyncio.wait_for(answer, 5)
            except (TimeoutError, ConnectionError) as exc:
                data = f"({type(exc).__name__})".encode()
            writer.close()
            counts["slow body"] += 1
            if not data.startswith(b"HTTP/1.1 408 "):
                problems.append(f"slow body: expected 408, got {data[:40]!r}")

    host, port = url.removeprefix("http://").split(":")
    await asyncio.gather(
        *(worker(k) for k in range(concurrency)),
        *(slow_client(host, int(port)) for _ in range(SLOW_CLIENTS)),
    )
    return counts, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--concurrency", type=int, default=8, help="clients at once")
    args = parser.parse_args()
    port = _free_port()
    env = {
        **os.environ,
        "DIGITCODE_PORT": str(port),
        "DIGITCODE_MAX_BATCH": str(MAX_BATCH),
        # One worker: the RSS measured is then the serving process's, not a supervisor's.
        "DIGITCODE_WORKERS": "1",
        "DIGITCODE_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            print("soak: the service never became ready", file=sys.stderr)
            return 1
        # Warm up until the resident memory settles: the heap keeps freed memory for reuse
        # (service/tuning.py), so it grows to the peak the traffic's largest requests need
        # at once, which a single short warm-up may or may not reach. A leak keeps growing
        # in the timed run whatever the start.
        rss_start = idle_rss_bytes(server.pid)
        for _ in range(WARMUP_ROUNDS):
            asyncio.run(drive(url, min(5.0, args.duration / 4), args.concurrency))
            before, rss_start = rss_start, idle_rss_bytes(server.pid)
            if rss_start < before * (1 + WARMUP_SETTLED):
                break
        started = time.monotonic()
        counts, problems = asyncio.run(drive(url, args.duration, args.concurrency))
        elapsed = time.monotonic() - started
        rss_end = idle_rss_bytes(server.pid)
    finally:
        server.terminate()
        code = server.wait(timeout=60)
    total = sum(counts.values())
    growth = rss_end / rss_start - 1
    print(f"soak: {total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
          f"{args.concurrency} clients")  # fmt: skip
    print("status codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"unexpected answers or connection errors: {len(problems)}")
    for line in Counter(problems).most_common(10):
        print(f"  {line[1]} x {line[0]}")
    print(f"RSS: {rss_start / 2**20:.1f} MiB -> {rss_end / 2**20:.1f} MiB ({growth:+.1%}, "
          f"limit +{RSS_GROWTH_LIMIT:.0%})")  # fmt: skip
    print(f"server exit status after SIGTERM: {code}")
    ok = not problems and growth < RSS_GROWTH_LIMIT and code == 0 and total > 0
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
