"""SIGTERM under sustained load: accepted requests all finish, then the process exits 0."""

import signal
import threading
import time

import httpx
import numpy as np
import pytest

from tests.conftest import running_service


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests_and_exits_0(workers):
    settings = {"DIGITCODE_LOG_LEVEL": "warning", "DIGITCODE_WORKERS": str(workers)}
    with running_service(settings) as (server, url):
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
    assert served_before > 0
    assert code == 0
    failed = [o for o in outcomes if o not in ("200", "not accepted")]
    assert failed == []
    assert outcomes.count("200") >= served_before
