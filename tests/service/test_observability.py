"""Metrics, structured access logs and request IDs."""

import json
import re
import subprocess

import httpx
import numpy as np
import pytest

from service.accesslog import ACCESS_LOG
from service.model import Autoencoder
from service.observability import error_buckets
from tests.conftest import DATA, running_service
from training.data import load_optdigits

ROW = [1.0] * 64


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric == name and got == wanted:
            return float(value)
    return 0.0


def test_metrics_count_requests_vectors_and_status(client, default_model):
    before = client.get("/metrics").text
    client.post("/encode", json={"vectors": [ROW] * 3})
    client.post("/encode", json={"vectors": [ROW[:5]]})
    after = client.get("/metrics")
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return _metric(text, name, **labels) - _metric(before, name, **labels)

    ok = {"endpoint": "/encode", "method": "POST", "status": "200"}
    model = {"model": "digitcode", "model_version": default_model.version}
    assert delta("digitcode_requests_total", **ok, **model) == 1
    assert delta("digitcode_requests_total", **{**ok, "status": "422"}, **model) == 1
    assert delta("digitcode_vectors_total", endpoint="/encode", **model) == 3
    assert delta("digitcode_request_duration_seconds_count", **ok) == 1
    assert delta("digitcode_request_body_bytes_count", endpoint="/encode") == 2
    preset = default_model.manifest["preset"]
    assert _metric(text, "digitcode_model_info", **model, preset=preset) == 1
    assert "digitcode_requests_in_flight" in text


def _mixed_rows() -> list[list[float]]:
    """Real test digits and two vectors that are nothing like a digit."""
    X = load_optdigits(DATA / "optdigits.tes")[0][:3]
    return [*X.tolist(), [16.0] * 64, [0.0, 16.0] * 32]


def _outliers(model: Autoencoder) -> int:
    f = model.forward(np.array(_mixed_rows()))
    assert f.distances is not None
    return int(np.count_nonzero(model.is_outlier(f.errors, f.distances)))


def _scores(text: str, model: Autoencoder, labels: dict[str, str]) -> tuple[float, float]:
    """The error histogram's count (checked against its buckets) and the outlier count."""
    count = _metric(text, "digitcode_reconstruction_error_count", **labels)
    bounds = error_buckets(model.manifest["calibration"])
    cumulative = [
        _metric(text, "digitcode_reconstruction_error_bucket", le=repr(b), **labels) for b in bounds
    ]
    assert cumulative == sorted(cumulative)  # cumulative buckets, at the calibration's bounds
    assert _metric(text, "digitcode_reconstruction_error_bucket", le="+Inf", **labels) == count
    return count, _metric(text, "digitcode_outliers_total", **labels)


def test_errors_and_outliers_are_measured_by_the_calibration(client, default_model):
    labels = {"model": "digitcode", "model_version": default_model.version}
    before = client.get("/metrics").text
    rows = _mixed_rows()
    errors = default_model.reconstruct(np.array(rows))[1]
    assert client.post("/reconstruct", json={"vectors": rows}).status_code == 200
    assert client.post("/encode", json={"vectors": rows}).status_code == 200  # not scored
    oip = {"inputs": [{"name": "vectors", "shape": [5, 64], "datatype": "FP32", "data": rows}]}
    oip["outputs"] = [{"name": "reconstruction"}]  # errors computed, so scored, not returned
    assert client.post("/v2/models/digitcode/infer", json=oip).status_code == 200
    after = client.get("/metrics").text
    count, outliers = (
        b - a
        for a, b in zip(
            _scores(before, default_model, labels),
            _scores(after, default_model, labels),
            strict=True,
        )
    )
    assert count == 10
    assert outliers == 2 * _outliers(default_model) and outliers >= 4
    median = default_model.manifest["calibration"]["quantiles"]["0.5"]
    below = _metric(after, "digitcode_reconstruction_error_bucket", le=repr(median), **labels)
    below -= _metric(before, "digitcode_reconstruction_error_bucket", le=repr(median), **labels)
    assert below == 2 * int(np.count_nonzero(errors <= median))
    assert _metric(after, "digitcode_outlier_threshold", **labels) == float(default_model.threshold)
    distance_threshold = float(default_model.distance_threshold)
    assert _metric(after, "digitcode_outlier_distance_threshold", **labels) == distance_threshold
    # Each of the two scores flags at most 1 % of digits like the calibration's.
    assert _metric(after, "digitcode_outlier_expected_ratio", **labels) == pytest.approx(0.02)
    assert (
        _metric(after, "digitcode_reconstruction_error_calibrated", quantile="0.5", **labels)
        == median
    )


def test_unknown_paths_share_one_label(client, default_model):
    # The registry is the process's: other tests' requests are in it too, so count the change.
    before = client.get("/metrics").text
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    client.post("/v2/models/digitcode/versions/nope/infer", json={})
    text = client.get("/metrics").text
    assert 'endpoint="/no/such/path/1"' not in text
    model = {"model": "digitcode", "model_version": default_model.version}
    other = {"endpoint": "other", "method": "GET", "status": "404", **model}

    def delta(**labels: str) -> float:
        name = "digitcode_requests_total"
        return _metric(text, name, **labels) - _metric(before, name, **labels)

    assert delta(**other) == 2
    # OIP paths are labelled by their template; names and versions have labels of their own.
    template = "/v2/models/{model}/versions/{version}/infer"
    infer = {"endpoint": template, "method": "POST", "status": "404", **model}
    assert delta(**infer) == 1
    assert "nope" not in text


def test_request_id_is_taken_or_made_and_echoed(client):
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    hostile = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])


def test_one_access_log_line_per_request_without_bodies(client, default_model, capfd):
    secret_row = [7.25] * 64
    capfd.readouterr()
    client.post("/reconstruct", json={"vectors": [secret_row] * 2}, headers={"X-Request-ID": "r1"})
    ACCESS_LOG.flush()
    err = capfd.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if '"digitcode.access"' in line]
    assert len(lines) == 1
    fields = lines[0]
    assert (fields["method"], fields["path"], fields["status"], fields["vectors"]) == (
        "POST",
        "/reconstruct",
        200,
        2,
    )
    assert fields["request_id"] == "r1"
    assert (fields["model"], fields["model_version"]) == ("digitcode", default_model.version)
    assert fields["duration_ms"] > 0
    assert list(fields) == [
        "time",
        "level",
        "logger",
        "message",
        "method",
        "path",
        "status",
        "duration_ms",
        "vectors",
        "request_id",
        "model",
        "model_version",
    ]
    assert "7.25" not in err


@pytest.mark.slow
def test_two_workers_share_metrics_and_log_json_lines(default_model):
    settings = {"DIGITCODE_WORKERS": "2"}
    model = {"model": "digitcode", "model_version": default_model.version}
    with running_service(settings, stderr=subprocess.PIPE) as (server, url):
        rows = _mixed_rows()
        for _ in range(30):  # a new connection each time, so both workers take some
            with httpx.Client(base_url=url) as c:
                assert c.post("/encode", json={"vectors": [ROW] * 2}).status_code == 200
                assert c.post("/reconstruct", json={"vectors": rows}).status_code == 200
        # every /metrics answer, from whichever worker, adds up all workers' counts
        for _ in range(4):
            with httpx.Client(base_url=url) as c:
                text = c.get("/metrics").text
            ok = {"endpoint": "/encode", "method": "POST", "status": "200"}
            assert _metric(text, "digitcode_requests_total", **ok, **model) == 30
            assert _metric(text, "digitcode_vectors_total", endpoint="/encode", **model) == 60
            assert _scores(text, default_model, model) == (30 * 5, 30 * _outliers(default_model))
        server.terminate()
        server.wait(timeout=30)
        log = server.stderr.read() if server.stderr else ""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "digitcode.access"]
    assert len([a for a in access if a["path"] == "/encode"]) == 30
    assert server.returncode == 0
    started = [line for line in lines if line["message"].startswith("serving models")]
    assert len(started) == 2  # each worker loaded the model


def test_oip_labels_use_templates_whatever_the_model_is_called():
    from service.operations import endpoint_label

    assert endpoint_label("/v2/models/versions/infer") == "/v2/models/{model}/infer"
    assert (
        endpoint_label("/v2/models/versions/versions/versions/ready")
        == "/v2/models/{model}/versions/{version}/ready"
    )
    assert endpoint_label("/v2/models/x") == "/v2/models/{model}"
    assert endpoint_label("/v2/models/x/y/z") == "other"
