"""SIGTERM under sustained load: requests the app has started all finish, then exit 0.

A request that the server has not begun to read when it stops (still in a socket buffer, or
sent on a keep-alive connection as the server closes it) fails on the client's side with a
connection error: that is the server refusing new work, not losing accepted work. The test
tells the two apart with the server's own records: every request the app completed must have
reached its client, and uvicorn must not have cancelled any request still running.
"""

import json
import signal
import threading
import time
from datetime import datetime

import httpx
import numpy as np
import pytest

from tests.conftest import running_service


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests_and_exits_0(workers, tmp_path):
    settings = {"DIGITCODE_LOG_LEVEL": "info", "DIGITCODE_WORKERS": str(workers)}
    log_path = tmp_path / "server.log"
    # A file, not a pipe: a full pipe would block the server's logging mid-test.
    with (
        log_path.open("w") as log_file,
        running_service(settings, stderr=log_file) as (server, url),
    ):
        body = {"vectors": np.full((5000, 64), 7.0).tolist()}  # ~50 ms of work each
        outcomes: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    try:
                        response = client.post("/reconstruct", json=body)
                    except httpx.TransportError as exc:
                        outcomes.append(f"not served: {type(exc).__name__}")
                        return
                    outcomes.append(str(response.status_code))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        # Under load: answers are coming back (not a fixed wait, which a slow machine outlasts).
        deadline = time.monotonic() + 60
        while outcomes.count("200") < 8:
            if time.monotonic() > deadline or not all(t.is_alive() for t in threads):
                stop.set()
                pytest.fail(f"the service never came under load: {outcomes}")
            time.sleep(0.05)
        signalled = time.time()  # the clock the server's log lines are stamped with
        server.send_signal(signal.SIGTERM)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        code = server.wait(timeout=30)
    log = log_path.read_text()
    assert code == 0
    # no HTTP error answers; connection errors only for requests the app never started
    assert [o for o in outcomes if o != "200" and not o.startswith("not served")] == []
    completed = [
        entry
        for entry in map(json.loads, (line for line in log.splitlines() if line.startswith("{")))
        if entry.get("logger") == "digitcode.access" and entry.get("path") == "/reconstruct"
    ]
    assert all(entry["status"] == 200 for entry in completed)
    # every answer the app produced reached its client ...
    assert len(completed) == outcomes.count("200")
    # ... the app finished requests after the signal, so there was something to drain ...
    finished = [datetime.fromisoformat(entry["time"]).timestamp() for entry in completed]
    assert max(finished) > signalled, "no request was in flight at SIGTERM: nothing drained"
    # ... and no request was still running when the server gave up waiting
    assert "Cancel" not in log and "timeout graceful shutdown exceeded" not in log
