"""Smoke tests of the benchmark's machinery: no wrk, no sockets (in-process apps and mocks)."""

import io
import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from benchmarks.answers import (
    AnswerMismatchError,
    Answers,
    NpyUnsupportedError,
    check_answers,
    compare_answers,
    fetch_json_answers,
    fetch_npy_answers,
    json_body,
    npy_body,
)
from benchmarks.apps import create_noop_app, create_straightforward_app
from benchmarks.report import (
    Measurement,
    ServerFigures,
    evaluate_targets,
    format_report,
    markdown_tables,
    median_runs,
    merge_figures,
    report_dict,
)
from benchmarks.run import load_rows, reference_answers
from benchmarks.wrk import WrkError, parse_wrk_output, write_wrk_script
from service.app import create_app
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL


@pytest.fixture(scope="module")
def straightforward(default_model):
    with TestClient(create_straightforward_app(default_model)) as client:
        yield client


@pytest.fixture(scope="module")
def service():
    with TestClient(create_app(Settings(model_dir=DEFAULT_MODEL))) as client:
        yield client


def _tampered(client: TestClient, path: str, key: str, delta: float) -> httpx.Client:
    """A client that forwards to ``client`` but adds ``delta`` to the first value of ``key``."""

    def handler(request: httpx.Request) -> httpx.Response:
        answer = client.request(
            request.method, request.url.path, content=request.content, headers=request.headers
        )
        content = answer.json()
        if request.url.path == path:
            first_row = content[key][0]
            if isinstance(first_row, list):
                first_row[0] += delta
            else:
                content[key][0] += delta
        return httpx.Response(answer.status_code, json=content)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test")


def test_noop_app_ignores_the_body():
    with TestClient(create_noop_app()) as client:
        answer = client.post("/encode", content=b"not json at all")
        assert answer.status_code == 200
        assert answer.json() == {"ok": True}
        assert client.get("/readyz").status_code == 200


def test_straightforward_app_and_service_give_the_same_answers(
    straightforward, service, default_model, sample_rows
):
    body = json_body(sample_rows)
    expected = fetch_json_answers(straightforward, body)
    actual = fetch_json_answers(service, body)
    assert expected.latent.shape == (10, 2)
    assert expected.vectors.shape == (10, 64)
    assert expected.errors.shape == (10,)
    check_answers(expected, actual)  # does not raise
    assert compare_answers(expected, actual) == []
    reference = reference_answers(default_model, sample_rows)
    np.testing.assert_allclose(expected.latent, reference.latent, rtol=0, atol=1e-12)
    check_answers(reference, actual)


@pytest.mark.parametrize(
    ("path", "key", "delta"),
    [
        ("/encode", "latent", 1e-5),
        ("/reconstruct", "vectors", 0.5),
        ("/reconstruct", "errors", 1e-5),
    ],
)
def test_answer_check_fails_when_one_value_differs(
    straightforward, service, sample_rows, path, key, delta
):
    body = json_body(sample_rows)
    expected = fetch_json_answers(straightforward, body)
    with _tampered(service, path, key, delta) as tampered:
        actual = fetch_json_answers(tampered, body)
    problems = compare_answers(expected, actual)
    assert len(problems) == 1
    assert problems[0].startswith(f"{key}: 1 values differ, first at (0")
    with pytest.raises(AnswerMismatchError, match=key):
        check_answers(expected, actual)


def test_answer_check_fails_on_shape_and_error_status(straightforward, sample_rows):
    expected = fetch_json_answers(straightforward, json_body(sample_rows))
    fewer = fetch_json_answers(straightforward, json_body(sample_rows[:9]))
    with pytest.raises(AnswerMismatchError, match=r"latent: shape \(9, 2\), expected \(10, 2\)"):
        check_answers(expected, fewer)
    bad_row = np.full((1, 64), 17.0)  # out of range: the service answers 422
    with (
        TestClient(create_app(Settings(model_dir=DEFAULT_MODEL))) as service,
        pytest.raises(AnswerMismatchError, match="answered 422"),
    ):
        fetch_json_answers(service, json_body(bad_row))


def test_answer_check_fails_on_nan():
    ok = Answers(latent=np.zeros((1, 2)), vectors=np.zeros((1, 64)), errors=np.zeros(1))
    nan = Answers(latent=np.array([[np.nan, 0.0]]), vectors=ok.vectors, errors=ok.errors)
    with pytest.raises(AnswerMismatchError, match="latent: 1 values differ"):
        check_answers(ok, nan)


def _npy_server(dtype: type[np.floating], shift: float = 0.0, content_type="application/x-npy"):
    """A mock of the service's .npy contract computing with the committed model."""
    from service.model import Autoencoder

    model = Autoencoder.from_dir(DEFAULT_MODEL)

    def handler(request: httpx.Request) -> httpx.Response:
        X = np.load(io.BytesIO(request.content), allow_pickle=False).astype(np.float64)
        if request.url.path == "/encode":
            out = model.encode(X)
        else:
            X_hat, errors = model.reconstruct(X)
            out = np.column_stack([X_hat, errors])
        out = (out + shift).astype(dtype)
        buffer = io.BytesIO()
        np.save(buffer, out)
        headers = {"content-type": content_type}
        return httpx.Response(200, content=buffer.getvalue(), headers=headers)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test")


def test_npy_answers_are_parsed_and_checked(default_model, sample_rows):
    reference = reference_answers(default_model, sample_rows)
    with _npy_server(np.float32) as client:
        answers = fetch_npy_answers(client, npy_body(sample_rows, np.float32), np.float32)
    assert answers.vectors.shape == (10, 64)
    assert answers.errors.shape == (10,)
    check_answers(reference, answers)
    with _npy_server(np.float32, shift=1e-5) as client:
        shifted = fetch_npy_answers(client, npy_body(sample_rows, np.float32), np.float32)
    with pytest.raises(AnswerMismatchError, match="latent"):
        check_answers(reference, shifted)


def test_npy_answer_of_the_wrong_dtype_or_type_is_refused(sample_rows):
    body = npy_body(sample_rows, np.float32)
    with _npy_server(np.float64) as client, pytest.raises(AnswerMismatchError, match="dtype"):
        fetch_npy_answers(client, body, np.float32)
    with (
        _npy_server(np.float32, content_type="application/json") as client,
        pytest.raises(NpyUnsupportedError, match="200 with Content-Type application/json"),
    ):
        fetch_npy_answers(client, body, np.float32)


_WRK_LINE = (
    'WRK_RESULT {"requests": 20000, "duration_us": 10000000, "bytes": 1, "non2xx": 3, '
    '"first_bad_status": 422, "errors_connect": 0, "errors_read": 0, "errors_write": 0, '
    '"errors_status": 3, "errors_timeout": 0, "latency_mean_us": 900.5, '
    '"latency_p50_us": 800, "latency_p99_us": 4200, "latency_max_us": 9000}'
)


def test_wrk_result_line_is_parsed_and_non_2xx_invalidates_the_run():
    result = parse_wrk_output("Running 10s test @ http://x\n" + _WRK_LINE + "\n")
    assert result.requests_per_s == pytest.approx(2000.0)
    assert result.latency_p99_us == 4200
    assert result.non2xx == 3
    assert result.valid is False
    with pytest.raises(WrkError, match="no WRK_RESULT line"):
        parse_wrk_output("Running 10s test\n")


def test_wrk_script_reads_the_body_file_and_counts_non_2xx(tmp_path):
    body = tmp_path / "batch.npy"
    script = write_wrk_script(tmp_path / "x.lua", body, "application/x-npy")
    text = script.read_text()
    assert f'io.open([[{body}]], "rb")' in text
    assert 'wrk.headers["Accept"] = "application/x-npy"' in text
    assert "status < 200 or status > 299" in text
    assert "latency:percentile(99)" in text
    with pytest.raises(ValueError, match="cannot embed"):
        write_wrk_script(tmp_path / "y.lua", body, 'application/json"')


def _run(server, workload, vectors, requests, p99_us=1000, non2xx=0):
    result = parse_wrk_output(
        _WRK_LINE.replace('"requests": 20000', f'"requests": {requests}')
        .replace('"non2xx": 3', f'"non2xx": {non2xx}')
        .replace('"latency_p99_us": 4200', f'"latency_p99_us": {p99_us}')
    )
    return Measurement(server, workload, vectors, 8, result)


def test_targets_are_met_or_not_from_the_ratios():
    runs = [
        _run("noop", "encode-1", 1, 10_000),
        _run("digitcode", "encode-1", 1, 7_900, p99_us=5_100),
        _run("straightforward", "encode-1000", 1000, 100),
        _run("digitcode", "encode-1000", 1000, 400),
        _run("straightforward", "reconstruct-1000", 1000, 100),
        _run("digitcode", "reconstruct-1000", 1000, 500, non2xx=1),
        Measurement("digitcode", "encode-npy-10000", 10_000, 4, None, "missing: .npy not served"),
    ]
    figures = {"digitcode": ServerFigures(startup_s=0.5, rss_mb=121.0)}
    targets = {t.name: t for t in evaluate_targets(runs, figures)}
    single = targets["single-vector /encode req/s vs no-op app"]
    assert single.value == pytest.approx(0.79)
    assert single.status == "NOT met"
    encode = targets["1000-vector JSON /encode vectors/s vs straightforward"]
    assert encode.value == pytest.approx(4.0)
    assert encode.status == "met"
    rec = targets["1000-vector JSON /reconstruct vectors/s vs straightforward"]
    assert rec.value == pytest.approx(5.0)
    assert rec.status == "NOT met (digitcode reconstruct-1000 run had errors)"
    assert targets["10 000-vector .npy /encode vectors/s"].status == (
        "NOT met (missing: .npy not served)"
    )
    assert targets["single-vector /encode p99 latency, 8 connections"].value == pytest.approx(5.1)
    assert targets["single-vector /encode p99 latency, 8 connections"].met is False
    assert targets["start-up to /readyz 200"].met is True
    assert targets["resident memory (VmRSS) after the run"].status == "NOT met"


def test_rounds_are_reduced_to_the_median_run():
    runs = [
        _run("noop", "encode-1", 1, 9_000),
        _run("digitcode", "encode-1", 1, 5_000),  # round 1: a burst of load
        _run("noop", "encode-1", 1, 10_000),
        _run("digitcode", "encode-1", 1, 8_200),
        _run("noop", "encode-1", 1, 9_500),
        _run("digitcode", "encode-1", 1, 8_000),
        _run("straightforward", "encode-1000", 1000, 100),
        _run("straightforward", "encode-1000", 1000, 120, non2xx=2),
    ]
    medians = {run.server: run for run in median_runs(runs)}
    assert list(medians) == ["noop", "digitcode", "straightforward"]
    # the middle of 9 000/10 000/9 500 requests
    assert medians["noop"].result is not None and medians["noop"].result.requests == 9_500
    assert medians["digitcode"].result is not None and medians["digitcode"].result.requests == 8_000
    assert medians["digitcode"].rounds == pytest.approx((500.0, 820.0, 800.0))
    assert medians["straightforward"].valid is False  # one bad round makes the figure invalid
    targets = {t.name: t for t in evaluate_targets(median_runs(runs), {})}
    assert targets["single-vector /encode req/s vs no-op app"].value == pytest.approx(8 / 9.5)
    assert "spread" in format_report(median_runs(runs), {}, [])
    assert median_runs(runs)[1].as_dict()["rounds_vectors_per_s"] == [500.0, 820.0, 800.0]


def test_readme_tables_come_from_the_saved_report():
    runs = median_runs(
        [
            _run("noop", "encode-1", 1, 10_000),
            _run("digitcode", "encode-1", 1, 7_000),
            _run("noop", "encode-1", 1, 9_000),
            _run("digitcode", "encode-1", 1, 8_200),
        ]
    )
    figures = {"digitcode": ServerFigures(startup_s=0.5, rss_mb=101.25)}
    saved = json.loads(
        json.dumps(report_dict({}, runs, figures, evaluate_targets(runs, figures), []))
    )
    text = markdown_tables(saved)
    # 10 s runs; of two rounds the lower one is kept: 9 000 and 7 000 requests
    assert "| noop | encode-1 | 900.0 | 900 | 0.80 | 1.00 | 11% |" in text
    assert "| **digitcode** | encode-1 | 700.0 | 700 | 0.80 | 1.00 | 17% |" in text
    assert "| single-vector /encode req/s vs no-op app | 0.778x | ≥ 0.8x | **NOT met** |" in text
    assert "| digitcode | 0.500 | 101.2 |" in text


def test_server_figures_merge_to_median_start_up_and_largest_memory():
    merged = merge_figures(
        [
            ServerFigures(startup_s=0.9, rss_mb=100.0, peak_rss_mb=101.0),
            ServerFigures(startup_s=0.4, rss_mb=110.0, peak_rss_mb=111.0, notes=["x"]),
            ServerFigures(startup_s=0.5, rss_mb=105.0, peak_rss_mb=120.0),
        ]
    )
    assert merged.startup_s == 0.5
    assert (merged.rss_mb, merged.peak_rss_mb, merged.notes) == (110.0, 120.0, ["x"])


def test_rows_fall_back_to_synthetic_pixels(tmp_path):
    rows = load_rows(5, path=tmp_path / "absent.tes")
    assert rows.shape == (5, 64)
    assert rows.min() >= 0 and rows.max() <= 16
    assert np.array_equal(rows, np.round(rows))
