"""SIGTERM under sustained load: accepted requests all finish, then the process exits 0."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests_and_exits_0(workers):
    port = _free_port()
    env = {
        **os.environ,
        "DIGITCODE_PORT": str(port),
        "DIGITCODE_LOG_LEVEL": "warning",
        "DIGITCODE_WORKERS": str(workers),
    }
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = {"vectors": np.full((5000, 64), 7.0).tolist()}  # ~50 ms of work each
        outcomes: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    try:
                        response = client.post("/reconstruct", json=body)
                        outcomes.append(str(response.status_code))
                    except httpx.ConnectError:
                        outcomes.append("not accepted")  # the listener is closed: fine
                        return
                    except httpx.TransportError as exc:
                        outcomes.append(f"failed: {type(exc).__name__}")
                        return

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        served_before = len(outcomes)
        server.send_signal(signal.SIGTERM)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        code = server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert served_before > 0
    assert code == 0
    failed = [o for o in outcomes if o not in ("200", "not accepted")]
    assert failed == []
    assert outcomes.count("200") >= served_before
