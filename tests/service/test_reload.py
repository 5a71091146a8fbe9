"""Model reload without downtime: SIGHUP (or reload_models) serves a valid new model, refuses a
bad one and keeps serving the old."""

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app, reload_models
from service.artifact import WEIGHTS_FILE, load_artifact, save_artifact
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL, Outcome, client_loop, running_service, worker_pids

BODY = {"vectors": [[7.0] * 64] * 100}

# What the loader says about the bad model below (service.artifact.load_artifact).
MISMATCH = "does not match the manifest's"


def _write_variant(model_dir: Path, shift: float) -> str:
    """Replace the artifact in ``model_dir`` by one with shifted biases; return its version."""
    a = load_artifact(DEFAULT_MODEL)
    variant = replace(a, biases=[b + shift for b in a.biases])
    return str(save_artifact(model_dir, variant)["model_version"])


def _write_bad(model_dir: Path) -> str:
    """Replace the artifact by one that must be refused; return the version it claims.

    A new version (its own manifest and ``model_version``) whose weights file is a valid
    ``.npz`` of the right shapes, but not the file its manifest's sha256 names: only the
    integrity check refuses it. Were it served anyway, answers would carry its version.
    """
    bad = _write_variant(model_dir, 0.03)
    shutil.copyfile(DEFAULT_MODEL / WEIGHTS_FILE, model_dir / WEIGHTS_FILE)
    return bad


def test_reload_model_swaps_a_good_model_and_refuses_a_bad_one(tmp_path, caplog):
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model_dir)
    app = create_app(Settings(model_dir=model_dir))
    with TestClient(app) as client:
        old = client.get("/healthz").headers["x-model-version"]
        new = _write_variant(model_dir, 0.01)
        assert reload_models(app) is True
        assert client.get("/healthz").headers["x-model-version"] == new != old
        metrics = client.get("/metrics").text
        info = 'digitcode_model_info{{model="digitcode",model_version="{}",preset="default"}} {}'
        assert info.format(new, "1.0") in metrics
        assert info.format(old, "0.0") in metrics
        bad = _write_bad(model_dir)
        assert bad not in (old, new)
        assert reload_models(app) is False
        assert client.get("/healthz").headers["x-model-version"] == new
        assert client.post("/encode", json={"vectors": [[1] * 64]}).status_code == 200
        assert f'model_version="{bad}"' not in client.get("/metrics").text
    refusals = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
    assert len(refusals) == 1 and MISMATCH in refusals[0]


def _versions(url: str, n: int = 6) -> set[str]:
    seen = set()
    for _ in range(n):  # new connections, so every worker gets asked
        with httpx.Client(base_url=url, timeout=5) as c:
            seen.add(c.get("/healthz").headers["x-model-version"])
    return seen


def _wait_for(predicate: Callable[[], object], what: str, log: Path, seconds: float = 60) -> None:
    """Poll ``predicate`` until it is true; fail the test, with the server's log, if it never is."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}; log:\n{log.read_text()}")


@contextmanager
def _serving_a_copy(
    model_dir: Path, log_path: Path, workers: int, **settings: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m service`` on a copy of the default model in ``model_dir``, logging to
    ``log_path`` (a file, not a pipe: a full pipe would block the server's logging mid-test)."""
    shutil.copytree(DEFAULT_MODEL, model_dir)
    env = {
        "DIGITCODE_MODEL_DIR": str(model_dir),
        "DIGITCODE_WORKERS": str(workers),
        "DIGITCODE_LOG_LEVEL": "warning",
        "DIGITCODE_LOG_FORMAT": "plain",
        **settings,
    }
    with log_path.open("w") as log_file, running_service(env, stderr=log_file) as served:
        yield served


# The line that says the bad model was refused, by who refuses it. One worker re-reads the
# directory itself (service.dataplane). With several, uvicorn's supervisor starts a replacement
# worker, whose start-up fails on the model; the supervisor then keeps the running workers and
# says so (uvicorn.supervisors.multiprocess.Multiprocess.restart_all).
REFUSED = {1: "reload refused, still serving the previous models", 2: "aborting the restart"}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_and_a_bad_model_keeps_the_old(tmp_path, workers):
    model_dir, log_path = tmp_path / "model", tmp_path / "server.log"
    with _serving_a_copy(model_dir, log_path, workers) as (server, url):
        old = _versions(url)
        new = _write_variant(model_dir, 0.02)
        assert old == {load_artifact(DEFAULT_MODEL).model_version} != {new}
        before = worker_pids(server.pid)
        assert len(before) == (workers if workers > 1 else 0)
        server.send_signal(signal.SIGHUP)
        # With two workers the restart is rolling: wait until no original worker is left.
        _wait_for(
            lambda: len(now := worker_pids(server.pid)) == len(before) and not before & now,
            "every worker to be replaced",
            log_path,
        )
        _wait_for(lambda: _versions(url) == {new}, "the new model to go live", log_path)
        serving = worker_pids(server.pid)
        assert REFUSED[workers] not in log_path.read_text()

        bad = _write_bad(model_dir)
        server.send_signal(signal.SIGHUP)
        # Wait for the refusal itself, not for a while: only once it has happened does "still
        # serving the old model" say anything about the reload.
        _wait_for(lambda: REFUSED[workers] in log_path.read_text(), "the refusal", log_path)
        log = log_path.read_text()
        assert MISMATCH in log  # refused for the reason the bad model has
        assert _versions(url, 10) == {new} != {bad}
        assert worker_pids(server.pid) == serving  # no worker replaced, none gone
        with httpx.Client(base_url=url) as c:
            assert c.post("/encode", json={"vectors": [[1] * 64]}).status_code == 200
            assert f'model_version="{bad}"' not in c.get("/metrics").text
        assert server.poll() is None


@pytest.mark.slow
@pytest.mark.parametrize("run", range(3))
def test_sighup_under_keep_alive_load_with_two_workers_fails_no_request(tmp_path, run):
    """A rolling restart (uvicorn replaces each worker once its replacement is ready) while
    eight keep-alive clients send requests: every request succeeds, before, during and after.

    The listener stays open the whole time (other workers hold it), so unlike a SIGTERM of the
    whole service no request may fail, not even one sent after the signal.
    """
    model_dir, log_path = tmp_path / "model", tmp_path / "server.log"
    with _serving_a_copy(model_dir, log_path, 2, DIGITCODE_DRAIN_SECONDS="1") as (server, url):
        new = _write_variant(model_dir, 0.02)
        outcomes: list[Outcome] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(url, outcomes, stop, BODY)) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        try:
            _wait_for(lambda: len(outcomes) > 50, "the service to come under load", log_path)
            before = worker_pids(server.pid)
            server.send_signal(signal.SIGHUP)
            _wait_for(
                lambda: len(now := worker_pids(server.pid)) == 2 and not before & now,
                "every worker to be replaced",
                log_path,
            )
            _wait_for(lambda: _versions(url) == {new}, "the new model to go live", log_path)
            served = len(outcomes)
            _wait_for(lambda: len(outcomes) > served + 50, "serving after it", log_path)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert server.poll() is None
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    versions = {o.version for o in outcomes}
    assert new in versions and len(versions) == 2  # served by the old workers, then the new
