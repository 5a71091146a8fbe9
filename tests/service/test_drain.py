"""A rolling update fails no client: on SIGTERM the service drains before it stops listening.

Sixteen keep-alive clients send 1 000-row requests to ``python -m service``; SIGTERM arrives
in the middle. Every request a client started before the signal must succeed, in each of ten
runs; ``/readyz`` answers 503 at once; answers during the drain say ``Connection: close``;
and the process exits 0. Requests started after the signal may fail once the listener has
closed: by then a real balancer has stopped sending them.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from tests.conftest import Outcome, client_loop, running_service

pytestmark = pytest.mark.slow

CLIENTS = 16
DRAIN_SECONDS = 2.0
BODY = {"vectors": np.full((1000, 64), 7.0).tolist()}


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
            threading.Thread(target=client_loop, args=(url, outcomes, stop, BODY))
            for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while sum(o.status == 200 for o in outcomes) < 2 * CLIENTS:  # under load, keep-alive
            assert time.monotonic() < deadline, "the service never came under load"
            time.sleep(0.02)
        # Sixteen client threads hold the GIL in turn: the signal may leave tens of ms after a
        # time taken just before it (88 ms seen; CI failed on it). So time both sides, and let
        # each check use the side that holds wherever in between the signal really left.
        sending = time.monotonic()
        server.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
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
    assert stopped - sending >= DRAIN_SECONDS


def test_a_connection_opened_just_before_shutdown_is_served_not_dropped():
    """The listener closes while a client has just connected: its request is still answered.

    In a rolling restart other workers keep the port open, so clients keep connecting to a
    worker until the moment it stops listening; closing such a connection (uvicorn closes every
    connection without a request in flight) would fail a request the client may already be
    sending. A connection that never sends anything is closed soon after.
    """
    with running_service({"DIGITCODE_WORKERS": "1"}) as (server, url):
        address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
        opened, silent = socket.create_connection(address), socket.create_connection(address)
        # Accepted in order: once a later connection is answered, these two are accepted.
        assert httpx.get(url + "/healthz").status_code == 200
        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while True:  # until the listener is closed (and uvicorn has shut connections down)
            try:
                socket.create_connection(address).close()
            except (ConnectionRefusedError, ConnectionResetError):
                # Refused once it is closed; reset when the probe was still in its accept
                # queue as it closed (a fresh-clone run failed on that race).
                break
            assert time.monotonic() < deadline, "the listener never closed"
            time.sleep(0.01)
        body = json.dumps({"vectors": [[7.0] * 64]}).encode()
        opened.sendall(
            b"POST /encode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        answer = _read_until_closed(opened)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert b"\r\nconnection: close\r\n" in answer.lower()
        assert b'"latent"' in answer
        assert _read_until_closed(silent) == b""
        assert server.wait(timeout=30) == 0


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)
