"""Smoke tests of the benchmark's machinery: no wrk, no sockets (in-process apps and mocks)."""

import io
import json
from collections.abc import Callable

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from benchmarks.answers import (
    HEADER_LENGTH,
    OIP_ENCODE,
    OIP_PATH,
    OIP_RECONSTRUCT,
    AnswerMismatchError,
    Answers,
    NpyUnsupportedError,
    check_answers,
    compare_answers,
    fetch_json_answers,
    fetch_npy_answers,
    fetch_oip_answers,
    json_body,
    npy_body,
    oip_body,
    parse_oip_answer,
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
from benchmarks.run import SERVERS, Bench, load_rows, parse_args, reference_answers
from benchmarks.servers import ServerSpec, server_environment
from benchmarks.wrk import WrkError, parse_wrk_output, write_wrk_script
from service.app import create_app
from service.settings import Settings
from service.tuning import BLAS_THREAD_VARIABLES
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


def test_wrk_script_sends_extra_headers(tmp_path):
    body = tmp_path / "oip-encode.bin"
    headers = {HEADER_LENGTH: "174"}
    text = write_wrk_script(
        tmp_path / "x.lua", body, "application/octet-stream", headers=headers
    ).read_text()
    assert 'wrk.headers["Content-Type"] = "application/octet-stream"' in text
    assert 'wrk.headers["Inference-Header-Content-Length"] = "174"' in text
    plain = write_wrk_script(tmp_path / "y.lua", body, "application/json").read_text()
    assert "Inference-Header-Content-Length" not in plain
    for bad in ({'X-"': "1"}, {"X-A": "1\n"}, {"X-A": "1\\"}):
        with pytest.raises(ValueError, match="cannot embed"):
            write_wrk_script(tmp_path / "z.lua", body, "application/json", headers=bad)


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
        _run("digitcode-nolog", "encode-1", 1, 10_100),
        _run("noop", "encode-1-shared", 1, 9_000),
        _run("digitcode", "encode-1-shared", 1, 7_290),
        _run("straightforward", "encode-1000", 1000, 100),
        _run("digitcode", "encode-1000", 1000, 400),
        _run("straightforward", "reconstruct-1000", 1000, 100),
        _run("digitcode", "reconstruct-1000", 1000, 500, non2xx=1),
        Measurement("digitcode", "encode-npy-10000", 10_000, 4, None, "missing: .npy not served"),
    ]
    figures = {"digitcode": ServerFigures(startup_s=0.5, rss_mb=121.0)}
    targets = {t.name: t for t in evaluate_targets(runs, figures)}
    single = targets["single-vector /encode req/s vs no-op app, pinned"]
    assert single.value == pytest.approx(0.79)
    assert single.status == "NOT met"  # goal 1.0
    shared = targets["single-vector /encode req/s vs no-op app, CPUs shared"]
    assert shared.value == pytest.approx(0.81)
    assert shared.status == "met"  # goal 0.8
    nolog = targets["the same without the access log, pinned"]
    assert nolog.value == pytest.approx(1.01)
    assert nolog.status == "info: would meet"
    assert targets["the same without the access log, CPUs shared"].status == (
        "info: would not meet"
    )
    encode = targets["1000-vector JSON /encode vectors/s vs straightforward"]
    assert encode.value == pytest.approx(4.0)
    assert encode.status == "met"
    rec = targets["1000-vector JSON /reconstruct vectors/s vs straightforward"]
    assert rec.value == pytest.approx(5.0)
    assert rec.status == "NOT met (digitcode reconstruct-1000 run had errors)"
    assert targets["10 000-vector .npy /encode vectors/s"].status == (
        "NOT met (missing: .npy not served)"
    )
    p99 = targets["single-vector /encode p99 latency, 8 connections, pinned"]
    assert p99.value == pytest.approx(5.1)
    assert p99.met is False
    assert targets["1000-vector JSON /reconstruct vectors/s"].status == (
        "NOT met (digitcode reconstruct-1000 run had errors)"
    )
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
    assert targets["single-vector /encode req/s vs no-op app, pinned"].value == pytest.approx(
        8 / 9.5
    )
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
    assert (
        "| single-vector /encode req/s vs no-op app, pinned | 0.778x | ≥ 1x | **NOT met** |" in text
    )
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


# --- the Open Inference Protocol workloads -----------------------------------------------------


def test_oip_binary_body_is_a_json_header_then_little_endian_float32(sample_rows):
    body = oip_body(sample_rows, OIP_ENCODE, binary=True)
    n = int(body.headers[HEADER_LENGTH])
    assert orjson.loads(body.content[:n]) == {
        "inputs": [
            {
                "name": "vectors",
                "shape": [10, 64],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 10 * 64 * 4},
            }
        ],
        "outputs": [{"name": "latent", "parameters": {"binary_data": True}}],
    }
    assert body.content[n:] == sample_rows.astype("<f4").tobytes()
    assert body.content_type == "application/octet-stream"
    assert body.outputs == ("latent",)


def test_oip_json_body_writes_the_rows_as_the_native_body_does(sample_rows):
    body = oip_body(sample_rows, OIP_RECONSTRUCT, binary=False)
    assert orjson.loads(body.content) == {
        "inputs": [
            {
                "name": "vectors",
                "shape": [10, 64],
                "datatype": "FP32",
                "data": sample_rows.tolist(),
            }
        ],
        "outputs": [{"name": "reconstruction"}, {"name": "error"}],
    }
    native_rows = json_body(sample_rows).removeprefix(b'{"vectors":').removesuffix(b"}")
    assert b'"data":' + native_rows + b"}" in body.content  # the same text for the numbers
    assert body.content_type == "application/json"
    assert dict(body.headers) == {}


@pytest.mark.parametrize("binary", [True, False])
def test_oip_answers_equal_the_native_ones(service, default_model, sample_rows, binary):
    answers = fetch_oip_answers(
        service,
        oip_body(sample_rows, OIP_ENCODE, binary=binary),
        oip_body(sample_rows, OIP_RECONSTRUCT, binary=binary),
    )
    assert answers.latent.shape == (10, 2)
    assert answers.vectors.shape == (10, 64)
    assert answers.errors.shape == (10,)
    check_answers(reference_answers(default_model, sample_rows), answers)
    if binary:
        native = fetch_npy_answers(service, npy_body(sample_rows, np.float32), np.float32)
    else:
        native = fetch_json_answers(service, json_body(sample_rows))
    assert compare_answers(native, answers) == []


def _response(content: bytes, headers=None, status=200) -> httpx.Response:
    request = httpx.Request("POST", "http://test" + OIP_PATH)
    return httpx.Response(status, content=content, headers=headers or {}, request=request)


def _oip_answer(outputs, *, header_length=None, tail=b"", status=200) -> httpx.Response:
    """An infer answer: ``outputs`` are (name, array, binary) triples, in that order."""
    described, chunks = [], []
    for name, array, binary in outputs:
        data = np.asarray(array, dtype="<f4")
        output = {"name": name, "datatype": "FP32", "shape": list(data.shape)}
        if binary:
            output["parameters"] = {"binary_data_size": data.nbytes}
            chunks.append(data.tobytes())
        else:
            output["data"] = data.ravel().tolist()
        described.append(output)
    header = orjson.dumps({"model_name": "digitcode", "outputs": described})
    headers = {} if not chunks else {HEADER_LENGTH: str(header_length or len(header))}
    return _response(b"".join([header, *chunks, tail]), headers, status)


def test_oip_answers_are_parsed_from_json_and_binary_outputs():
    latent = np.array([[0.25, -0.5], [1.0, 2.0]])
    errors = np.array([0.125, 0.5])
    arrays = parse_oip_answer(
        _oip_answer([("latent", latent, True), ("error", errors, False)]), "test"
    )
    assert list(arrays) == ["latent", "error"]
    np.testing.assert_array_equal(arrays["latent"], latent)
    np.testing.assert_array_equal(arrays["error"], errors)
    assert arrays["latent"].dtype == np.float64
    both_binary = _oip_answer([("error", errors, True), ("latent", latent, True)])
    np.testing.assert_array_equal(parse_oip_answer(both_binary, "test")["latent"], latent)


_LATENT = np.zeros((2, 2))
_FIVE_NUMBERS = (
    b'{"outputs":[{"name":"latent","datatype":"FP32","shape":[2,2],"data":[1,2,3,4,5]}]}'
)
_FP64 = b'{"outputs":[{"name":"latent","datatype":"FP64","shape":[1],"data":[1]}]}'
_SHORT = b'{"outputs":[{"name":"latent","datatype":"FP32","shape":[2,2],'
_SHORT += b'"parameters":{"binary_data_size":16}}]}'


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_oip_answer([("latent", _LATENT, True)], header_length=10**6), "Content-Length"),
        (_oip_answer([("latent", _LATENT, True)], tail=b"\0" * 4), "4 bytes after"),
        (_oip_answer([("latent", _LATENT, True), ("latent", _LATENT, True)]), "answered twice"),
        (_oip_answer([("latent", _LATENT, True)], status=400), "answered 400"),
        (_response(_FIVE_NUMBERS), "not the documented answer"),
        (_response(_FP64), "latent is FP64, not FP32"),
        (
            _response(_SHORT + bytes(12), {HEADER_LENGTH: str(len(_SHORT))}),
            "binary_data_size 16, 12 bytes left",
        ),
        (_response(b'{"outputs": 1}'), "not the documented answer"),
    ],
)
def test_malformed_oip_answers_are_refused(answer, message):
    with pytest.raises(AnswerMismatchError, match=message):
        parse_oip_answer(answer, "test")


def _forwarding(
    client: TestClient, change: Callable[[httpx.Request, httpx.Response], httpx.Response]
) -> httpx.Client:
    """A client that forwards to ``client`` and lets ``change`` rewrite each answer."""

    def handler(request: httpx.Request) -> httpx.Response:
        answer = client.request(
            request.method, request.url.path, content=request.content, headers=request.headers
        )
        copy = httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)
        return change(request, copy)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test")


def _shift_first_binary_latent(request: httpx.Request, answer: httpx.Response) -> httpx.Response:
    if request.url.path != OIP_PATH or HEADER_LENGTH not in answer.headers:
        return answer
    n = int(answer.headers[HEADER_LENGTH])
    if b'"name":"latent"' not in answer.content[:n]:
        return answer
    first = np.frombuffer(answer.content, dtype="<f4", count=1, offset=n) + np.float32(1e-3)
    content = answer.content[:n] + first.tobytes() + answer.content[n + 4 :]
    return httpx.Response(200, content=content, headers=answer.headers)


def test_oip_answer_check_fails_when_one_binary_value_differs(service, sample_rows):
    encode = oip_body(sample_rows, OIP_ENCODE, binary=True)
    reconstruct = oip_body(sample_rows, OIP_RECONSTRUCT, binary=True)
    expected = fetch_oip_answers(service, encode, reconstruct)
    with _forwarding(service, _shift_first_binary_latent) as tampered:
        actual = fetch_oip_answers(tampered, encode, reconstruct)
    problems = compare_answers(expected, actual)
    assert len(problems) == 1
    assert problems[0].startswith("latent: 1 values differ, first at (0, 0)")


def test_oip_answer_must_hold_exactly_the_outputs_asked_for(service, sample_rows):
    everything = oip_body(sample_rows, (*OIP_ENCODE, *OIP_RECONSTRUCT), binary=False)

    def handler(request: httpx.Request) -> httpx.Response:  # every output, whatever was asked
        answer = service.post(OIP_PATH, content=everything.content)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    with (
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test") as client,
        pytest.raises(
            AnswerMismatchError,
            match=r"outputs \['error', 'latent', 'reconstruction'\], asked \['latent'\]",
        ),
    ):
        fetch_oip_answers(
            client,
            oip_body(sample_rows, OIP_ENCODE, binary=False),
            oip_body(sample_rows, OIP_RECONSTRUCT, binary=False),
        )


def test_oip_targets_are_met_or_not():
    runs = [
        _run("digitcode", "encode-npy-10000", 10_000, 2_100),
        _run("digitcode", "oip-binary-encode-10000", 10_000, 2_000),
        _run("digitcode", "encode-1000", 1000, 4_000),
        _run("digitcode", "oip-json-encode-1000", 1000, 3_000),
        _run("digitcode", "reconstruct-1000", 1000, 2_000),
        _run("digitcode", "oip-json-reconstruct-1000", 1000, 1_800),
    ]
    targets = {t.name: t for t in evaluate_targets(runs, {})}
    binary = targets["10 000-vector binary OIP /infer (latent) vectors/s"]
    assert binary.value == pytest.approx(2_000_000)  # 2 000 requests in 10 s
    assert binary.status == "met"
    assert targets["10 000-vector .npy /encode vectors/s"].status == "met"
    ratio = targets["10 000-vector binary OIP /infer vs .npy /encode"]
    assert ratio.value == pytest.approx(2_000 / 2_100)
    assert ratio.status == "met"
    json_ratio = targets["1000-vector JSON OIP /infer (latent) vs JSON /encode"]
    assert json_ratio.value == pytest.approx(0.75)
    assert json_ratio.status == "NOT met"
    info = targets["1000-vector JSON OIP reconstruction+error vs /reconstruct"]
    assert info.value == pytest.approx(0.9)
    assert info.status == "info: would meet"

    slow = [run for run in runs if run.workload != "oip-binary-encode-10000"]
    slow.append(_run("digitcode", "oip-binary-encode-10000", 10_000, 1_470))
    targets = {t.name: t for t in evaluate_targets(slow, {})}
    assert targets["10 000-vector binary OIP /infer (latent) vectors/s"].met is False  # 1.47 M
    assert targets["10 000-vector binary OIP /infer vs .npy /encode"].value == pytest.approx(0.7)
    assert targets["10 000-vector binary OIP /infer vs .npy /encode"].met is False

    note = "not timed: OIP binary answers differ"
    skipped = [
        *runs[:1],
        Measurement("digitcode", "oip-binary-encode-10000", 10_000, 4, None, note),
    ]
    targets = {t.name: t for t in evaluate_targets(skipped, {})}
    assert targets["10 000-vector binary OIP /infer vs .npy /encode"].status == f"NOT met ({note})"
    assert targets["1000-vector JSON OIP /infer (latent) vs JSON /encode"].status == (
        "NOT met (not measured)"
    )


def test_every_server_gets_one_blas_thread_unless_told_otherwise():
    spec = ServerSpec("x", ["serve"], {"OMP_NUM_THREADS": "2", "DIGITCODE_PORT": "{port}"})
    environ = {"DIGITCODE_API_KEY": "secret", "MKL_NUM_THREADS": "3", "PATH": "/bin"}
    env = server_environment(spec, 8123, environ)
    assert env == {
        "DIGITCODE_PORT": "8123",
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "3",
        "OPENBLAS_NUM_THREADS": "1",
        "PATH": "/bin",
    }
    assert environ == {"DIGITCODE_API_KEY": "secret", "MKL_NUM_THREADS": "3", "PATH": "/bin"}
    for server in SERVERS:
        env = server_environment(server, 8123, {})
        assert [env[name] for name in BLAS_THREAD_VARIABLES] == ["1", "1", "1"], server.name


@pytest.fixture
def small_bench(tmp_path):
    return Bench(parse_args(["--batch", "20", "--npy-batch", "50"]), tmp_path)


def test_bench_writes_the_oip_bodies_and_their_headers_into_the_scripts(small_bench, tmp_path):
    keys = {w.key: w for w in small_bench.workloads}
    binary = keys["oip-binary-encode-50"]
    assert (binary.path, binary.vectors, binary.connections) == (OIP_PATH, 50, 4)
    assert binary.servers == ("digitcode",)
    assert keys["oip-json-encode-20"].vectors == 20
    assert keys["oip-json-reconstruct-20"].servers == ("digitcode",)
    body = small_bench.oip["oip-encode.bin"]
    assert (tmp_path / "oip-encode.bin").read_bytes() == body.content
    assert body.content == oip_body(small_bench.rows, OIP_ENCODE, binary=True).content
    script = small_bench.scripts["oip-binary-encode-50"].read_text()
    assert f'wrk.headers["{HEADER_LENGTH}"] = "{body.headers[HEADER_LENGTH]}"' in script
    assert 'wrk.headers["Content-Type"] = "application/octet-stream"' in script
    json_script = small_bench.scripts["oip-json-encode-20"].read_text()
    assert 'wrk.headers["Content-Type"] = "application/json"' in json_script
    assert HEADER_LENGTH not in json_script
    assert (tmp_path / "oip-reconstruct.json").read_bytes() == oip_body(
        small_bench.rows[:20], OIP_RECONSTRUCT, binary=False
    ).content


def test_bench_times_oip_only_when_its_answers_agree(small_bench, service):
    assert small_bench.check_answers_of("digitcode", service) == set()
    assert small_bench.problems == []
    with _forwarding(service, _shift_first_binary_latent) as tampered:
        skipped = small_bench.check_answers_of("digitcode", tampered)
    assert skipped == {"oip-binary-encode-50"}
    assert len(small_bench.problems) == 1
    assert small_bench.problems[0].startswith("digitcode OIP binary answers differ: latent: 1 ")
    assert [(run.workload, run.note) for run in small_bench.runs] == [
        ("oip-binary-encode-50", "not timed: OIP binary answers differ")
    ]
