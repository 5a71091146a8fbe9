"""The inference endpoints' own work: the ``Server-Timing`` stages of every answer."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest

import service.protocols.native as native
from service.model import Autoencoder

ROW = [3.0] * 64
TIMING = re.compile(
    r"parse;dur=([0-9.]+), queue;dur=([0-9.]+), model;dur=([0-9.]+), serialize;dur=([0-9.]+)"
)


def _stages(response) -> dict[str, float]:
    """The answer's Server-Timing durations in ms, by stage (fails when absent or malformed)."""
    match = TIMING.fullmatch(response.headers.get("server-timing", ""))
    assert match, f"no Server-Timing stages in {dict(response.headers)}"
    stages = ("parse", "queue", "model", "serialize")
    return dict(zip(stages, map(float, match.groups()), strict=True))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _oip(outputs: list[str]) -> dict:
    return {
        "inputs": [{"name": "vectors", "shape": [2, 64], "datatype": "FP32", "data": [ROW, ROW]}],
        "outputs": [{"name": name} for name in outputs],
    }


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/encode", {"json": {"vectors": [ROW]}}),
        ("/reconstruct", {"json": {"vectors": [ROW, ROW]}}),
        ("/decode", {"json": {"latent": [[0.1, -0.2]]}}),
        (
            "/encode",
            {
                "content": _npy(np.full((3, 64), 3.0, np.float32)),
                "headers": {"Content-Type": "application/x-npy"},
            },
        ),
        ("/v2/models/digitcode/infer", {"json": _oip(["latent"])}),
        ("/v2/models/digitcode/infer", {"json": _oip(["reconstruction", "error"])}),
    ],
)
def test_every_inference_answer_says_where_its_time_went(client, path, kwargs):
    started = time.perf_counter()
    response = client.post(path, **kwargs)
    round_trip_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    stages = _stages(response)
    assert all(v >= 0 for v in stages.values())
    assert sum(stages.values()) <= round_trip_ms  # measured inside the request


def test_stages_are_told_apart(client, monkeypatch):
    forward = Autoencoder.forward
    parse = native.parse_json  # type: ignore[attr-defined]

    def slow_forward(self, *args, **kwargs):
        time.sleep(0.08)
        return forward(self, *args, **kwargs)

    def slow_parse(*args, **kwargs):
        time.sleep(0.04)
        return parse(*args, **kwargs)

    monkeypatch.setattr(Autoencoder, "forward", slow_forward)
    monkeypatch.setattr(native, "parse_json", slow_parse)
    stages = _stages(client.post("/reconstruct", json={"vectors": [ROW]}))
    assert 80 <= stages["model"] < 1000
    assert 40 <= stages["parse"] < 80
    assert stages["serialize"] < 40
    assert stages["queue"] == 0  # alone: computed at once


def test_errors_have_no_stages(client):
    response = client.post("/encode", json={"vectors": [[99.0] * 64]})
    assert response.status_code == 422
    assert "server-timing" not in response.headers
