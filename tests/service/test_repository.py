"""The model repository: <dir>/<model>/<version>/ artifacts, served side by side, re-read on
SIGHUP with no failed request."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.artifact import WEIGHTS_FILE, ArtifactError, load_artifact, save_artifact
from service.repository import load_repository
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL, running_service

ROW = [1.0] * 64


def _version(root: Path, model: str, version: str, shift: float, created: str) -> Path:
    """Write the default model with biases shifted by ``shift`` as ``model``/``version``."""
    a = load_artifact(DEFAULT_MODEL)
    manifest = {**a.manifest, "created_at": created}
    variant = replace(a, biases=[b + shift for b in a.biases], manifest=manifest)
    path = root / model / version
    save_artifact(path, variant)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    _version(root, "digitcode", "1", 0.0, "2026-01-01T00:00:00Z")
    _version(root, "digitcode", "2", 0.05, "2026-02-01T00:00:00Z")
    _version(root, "digitcode", "10", 0.1, "2025-12-01T00:00:00Z")  # oldest, not "newest name"
    _version(root, "other", "a", -0.05, "2026-01-01T00:00:00Z")
    return root


def test_every_model_and_version_is_loaded_and_the_newest_is_the_default(repo):
    repository, refused = load_repository(repo)
    assert refused == []
    assert {name: sorted(v) for name, v in repository.models.items()} == {
        "digitcode": ["1", "10", "2"],
        "other": ["a"],
    }
    assert repository.get(None).version == "2"  # created last
    assert repository.get("digitcode", "10").version == "10"
    assert repository.get("other").name == "other"


def test_a_single_artifact_is_the_model_digitcode():
    repository, _ = load_repository(DEFAULT_MODEL)
    served = repository.get(None)
    assert (served.name, served.version) == (
        "digitcode",
        load_artifact(DEFAULT_MODEL).model_version,
    )


def test_a_broken_version_is_refused_and_the_rest_served(repo):
    (repo / "digitcode" / "2" / WEIGHTS_FILE).write_bytes(b"broken")
    (repo / "other" / "bad name!").mkdir()
    repository, refused = load_repository(repo)
    assert sorted(repository.models["digitcode"]) == ["1", "10"]
    messages = [str(e) for e in refused]
    assert len(messages) == 2
    assert any("digitcode/2/weights.npz" in m for m in messages)
    assert any("bad name!" in m for m in messages)


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda root: root.mkdir(), "no loadable artifact"),
        (lambda root: _version(root, "other", "1", 0, "x"), "default model 'digitcode'"),
    ],
)
def test_nothing_to_serve_is_an_error(tmp_path, setup, fragment):
    root = tmp_path / "repo"
    setup(root)
    with pytest.raises(ArtifactError, match=fragment):
        load_repository(root)


def test_the_app_serves_every_version_and_the_native_api_the_newest(repo):
    app = create_app(Settings(model_dir=repo))
    with TestClient(app) as client:
        native = client.post("/encode", json={"vectors": [ROW]})
        assert native.headers["x-model-version"] == "2"
        body = {"inputs": [{"name": "vectors", "shape": [1, 64], "datatype": "FP64", "data": ROW}]}
        answers = {}
        for version in ("1", "2", "10"):
            response = client.post(f"/v2/models/digitcode/versions/{version}/infer", json=body)
            assert response.json()["model_version"] == version
            assert response.headers["x-model-version"] == version
            answers[version] = response.json()["outputs"][0]["data"]
        newest = client.post("/v2/models/digitcode/infer", json=body).json()
        assert newest["model_version"] == "2" and newest["outputs"][0]["data"] == answers["2"]
        assert answers["1"] != answers["2"] != answers["10"]  # really different models
        np.testing.assert_allclose(native.json()["latent"][0], answers["2"], rtol=1e-6)
        other = client.post("/v2/models/other/infer", json=body)
        assert other.status_code == 200 and other.json()["model_version"] == "a"
        meta = client.get("/v2/models/digitcode-decoder").json()
        assert meta["versions"] == ["1", "2", "10"]  # by number
        text = client.get("/metrics").text
        assert (
            'digitcode_vectors_total{endpoint="/v2/models/{model}/versions/{version}/infer",'
            'model="digitcode",model_version="10"} 1.0' in text
        )


def test_the_default_model_setting_picks_what_the_native_api_serves(repo):
    app = create_app(Settings(model_dir=repo, default_model="other"))
    with TestClient(app) as client:
        assert client.post("/encode", json={"vectors": [ROW]}).headers["x-model-version"] == "a"
        assert client.get("/model").status_code == 200


def _load(url: str, stop: threading.Event, results: Counter[str]) -> None:
    """Native and unversioned OIP requests in a loop; counts answers by status."""
    body = {"inputs": [{"name": "vectors", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            for response in (
                c.post("/encode", json={"vectors": [ROW] * 4}),
                c.post("/v2/models/digitcode/infer", json=body),
            ):
                results[str(response.status_code)] += 1


def _wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.slow
def test_sighup_rereads_the_repository_under_load_without_a_failed_request(repo, tmp_path):
    log = tmp_path / "service.log"
    settings = {"DIGITCODE_MODEL_DIR": str(repo), "DIGITCODE_WORKERS": "1"}
    with log.open("w") as err, running_service(settings, stderr=err) as (server, url):
        status = lambda path: httpx.get(url + path, timeout=5).status_code  # noqa: E731
        results: Counter[str] = Counter()
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(url, stop, results)) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            _wait_for(lambda: sum(results.values()) > 20)
            # A new version appears; a removed one answers 404; a broken one is refused.
            _version(repo, "digitcode", "3", 0.2, "2026-03-01T00:00:00Z")
            shutil.rmtree(repo / "digitcode" / "1")
            broken = repo / "other" / "b"
            shutil.copytree(repo / "other" / "a", broken)
            (broken / WEIGHTS_FILE).write_bytes(b"not a model")
            server.send_signal(signal.SIGHUP)
            _wait_for(lambda: status("/v2/models/digitcode/versions/3/ready") == 200)
            assert status("/v2/models/digitcode/versions/1/ready") == 404
            assert status("/v2/models/other/versions/b/ready") == 404
            assert status("/v2/models/other/versions/a/ready") == 200
            _wait_for(
                lambda: (
                    httpx.post(url + "/encode", json={"vectors": [ROW]}).headers["x-model-version"]
                    == "3"
                )
            )
            served = sum(results.values())
            _wait_for(lambda: sum(results.values()) > served + 20)  # still serving after it
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert set(results) == {"200"}, results
        assert server.poll() is None
    refusals = [line for line in log.read_text().splitlines() if "model refused" in line]
    assert len(refusals) == 1 and "other/b" in refusals[0]


def test_names_that_would_shadow_or_hide_are_refused(repo):
    _version(repo, "digitcode-decoder", "1", 0.0, "2026-01-01T00:00:00Z")  # hides a decoder
    shutil.copytree(repo / "other" / "a", repo / "loose")  # an artifact without a version dir
    shutil.move(str(repo / "loose"), str(repo / "flat"))
    repository, refused = load_repository(repo)
    assert set(repository.models) == {"digitcode", "other"}
    messages = " ".join(str(e) for e in refused)
    assert "may not end in -decoder" in messages
    assert "flat: an artifact directly in a model directory" in messages


def test_a_single_artifact_with_another_default_model_is_an_error():
    with pytest.raises(ArtifactError, match=r"default model .* is 'other'"):
        load_repository(DEFAULT_MODEL, default="other")


def test_numbered_versions_are_ordered_by_number(tmp_path):
    root = tmp_path / "repo"
    for version in ("9", "10", "b"):
        _version(root, "digitcode", version, 0.0, "2026-01-01T00:00:00Z")  # same created_at
    repository, _ = load_repository(root)
    assert repository.get(None).version == "b"  # names after numbers
    del_b = root / "digitcode" / "b"
    shutil.rmtree(del_b)
    assert load_repository(root)[0].get(None).version == "10"
    app = create_app(Settings(model_dir=root))
    with TestClient(app) as client:
        assert client.get("/v2/models/digitcode").json()["versions"] == ["9", "10"]


def test_oip_answers_name_the_model_asked_for(repo):
    app = create_app(Settings(model_dir=repo))
    with TestClient(app) as client:
        missing = client.get("/v2/models/digitcode-decoder/versions/7")
        assert missing.status_code == 404
        assert "of model 'digitcode-decoder'" in missing.json()["error"]
        meta = client.get("/v2/models/other")
        assert meta.headers["x-model-version"] == "a"  # not the native model's "2"
        assert client.get("/v2/models/digitcode/versions/1/ready").headers["x-model-version"] == "1"
