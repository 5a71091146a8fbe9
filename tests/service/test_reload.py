"""Model reload without downtime: SIGHUP (or reload_models) serves a valid new model, refuses a
bad one and keeps serving the old."""

import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app, reload_models
from service.artifact import WEIGHTS_FILE, Artifact, load_artifact, save_artifact
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL, running_service


def _write_variant(model_dir: Path, shift: float) -> str:
    """Replace the artifact in ``model_dir`` by one with shifted biases; return its version."""
    a = load_artifact(DEFAULT_MODEL)
    variant = Artifact(
        a.scaler_min, a.scaler_scale, a.weights, [b + shift for b in a.biases], a.manifest
    )
    return str(save_artifact(model_dir, variant)["model_version"])


def _break(model_dir: Path) -> None:
    (model_dir / WEIGHTS_FILE).write_bytes(b"not a model")


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
        _break(model_dir)
        assert reload_models(app) is False
        assert client.get("/healthz").headers["x-model-version"] == new
        assert client.post("/encode", json={"vectors": [[1] * 64]}).status_code == 200
    assert any("reload refused" in r.getMessage() for r in caplog.records)


def _versions(url: str, n: int = 6) -> set[str]:
    seen = set()
    for _ in range(n):  # new connections, so every worker gets asked
        with httpx.Client(base_url=url, timeout=5) as c:
            seen.add(c.get("/healthz").headers["x-model-version"])
    return seen


def _worker_pids(parent: int) -> set[int]:
    """PIDs of the worker processes uvicorn's supervisor spawned under ``parent``."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            pids.add(int(stat.parent.name))
    return pids


def _wait_for(predicate, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_and_a_bad_model_keeps_the_old(tmp_path, workers):
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model_dir)
    settings = {
        "DIGITCODE_MODEL_DIR": str(model_dir),
        "DIGITCODE_WORKERS": str(workers),
        "DIGITCODE_LOG_LEVEL": "warning",
    }
    with running_service(settings) as (server, url):
        old = _versions(url)
        new = _write_variant(model_dir, 0.02)
        assert old == {load_artifact(DEFAULT_MODEL).model_version} != {new}
        before = _worker_pids(server.pid)
        assert len(before) == (workers if workers > 1 else 0)
        server.send_signal(signal.SIGHUP)
        # With two workers the restart is rolling: wait until no original worker is left.
        assert _wait_for(lambda: not before & _worker_pids(server.pid))
        assert _wait_for(lambda: _versions(url) == {new}), "the new model never went live"
        _break(model_dir)
        server.send_signal(signal.SIGHUP)
        time.sleep(3)  # time for a refused reload (or a failed replacement worker)
        assert _versions(url, 10) == {new}
        with httpx.Client(base_url=url) as c:
            assert c.post("/encode", json={"vectors": [[1] * 64]}).status_code == 200
        assert server.poll() is None
