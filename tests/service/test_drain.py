"""A rolling update fails no client: on SIGTERM the service drains before it stops listening.

Sixteen keep-alive clients send 1 000-row requests to ``python -m service``; SIGTERM arrives
in the middle. Every request a client started before the signal must succeed, in each of ten
runs; ``/readyz`` answers 503 at once; answers during the drain say ``Connection: close``;
and the process exits 0. Requests started after the signal may fail once the listener has
closed: by then a real balancer has stopped sending them.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from tests.conftest import running_service

pytestmark = pytest.mark.slow

CLIENTS = 16
DRAIN_SECONDS = 2.0
BODY = {"vectors": np.full((1000, 64), 7.0).tolist()}


@dataclass
class Outcome:
    started: float  # time.monotonic() when the request was sent
    status: int | None  # None: a transport error
    connection: str  # the answer's Connection header


def client_loop(url: str, outcomes: list[Outcome], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                answer = client.post("/encode", json=BODY)
            except httpx.TransportError:
                outcomes.append(Outcome(started, None, ""))
                time.sleep(0.05)  # the listener has closed: no busy loop until the end
                continue
            outcomes.append(
                Outcome(started, answer.status_code, answer.headers.get("connection", ""))
            )


@pytest.mark.parametrize("run", range(10))
def test_sigterm_under_keep_alive_load_fails_no_request_started_before_it(run):
    settings = {
        "DIGITCODE_WORKERS": "1",
        "DIGITCODE_LOG_LEVEL": "warning",
        "DIGITCODE_DRAIN_SECONDS": str(DRAIN_SECONDS),
    }
    with running_service(settings) as (server, url):
        outcomes: list[Outcome] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(url, outcomes, stop)) for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while sum(o.status == 200 for o in outcomes) < 2 * CLIENTS:  # under load, keep-alive
            assert time.monotonic() < deadline, "the service never came under load"
            time.sleep(0.02)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=5) as probe:  # both within the drain
            ready, ready_oip = probe.get("/readyz"), probe.get("/v2/health/ready")
        code = server.wait(timeout=30)
        stopped = time.monotonic()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    before = [o for o in outcomes if o.started < signalled]
    failed = [o for o in before if o.status != 200]
    assert not failed, f"{len(failed)} of {len(before)} requests started before SIGTERM failed"
    assert code == 0
    assert ready.status_code == 503 and "draining" in ready.json()["detail"]
    assert ready_oip.status_code == 503
    during = [o for o in outcomes if signalled + 0.05 < o.started and o.status == 200]
    assert during, "nothing was served during the drain"
    assert all(o.connection == "close" for o in during)
    assert stopped - signalled >= DRAIN_SECONDS
