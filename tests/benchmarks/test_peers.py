"""``make bench-peers``'s machinery, without the peers installed: no wrk, mostly no sockets."""

import dataclasses
import json
import re
import sys

import httpx
import numpy as np
import orjson
import pytest

from benchmarks.answers import AnswerMismatchError, Answers, check_answers, json_body
from benchmarks.peers.formats import FORMATS, OPERATIONS, fetch_answers
from benchmarks.peers.model import TOLERANCE, SklearnModel, write_model
from benchmarks.peers.process import session_members, start_peer
from benchmarks.peers.report import (
    END_MARKER,
    START_MARKER,
    ServerRounds,
    markdown,
    replace_block,
    report_dict,
)
from benchmarks.peers.run import WORKLOADS, PeersBench, parse_args, request_bodies
from benchmarks.peers.servers import sklearn_autoencoder
from benchmarks.peers.venvs import requirements_file
from benchmarks.report import Measurement
from benchmarks.run import load_rows
from benchmarks.servers import ServerSpec
from benchmarks.wrk import WrkResult
from service.artifact import load_artifact
from service.model import Autoencoder
from tests.conftest import DEFAULT_MODEL, ROOT


@pytest.fixture(scope="module")
def sk_model() -> SklearnModel:
    return SklearnModel.from_dir(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return load_rows(1797)  # all of optdigits.tes


def _float64_autoencoder() -> Autoencoder:
    """The committed model with its layers in float64: the service's forward pass, no rounding."""
    artifact = load_artifact(DEFAULT_MODEL)
    return Autoencoder(
        dataclasses.replace(
            artifact,
            weights=[w.astype(np.float64) for w in artifact.weights],
            biases=[b.astype(np.float64) for b in artifact.biases],
            prototypes=None,
        )
    )


def test_the_mlp_regressor_is_the_committed_network(sk_model, rows):
    mlp = sk_model.pipeline.named_steps["mlp"]
    artifact = load_artifact(DEFAULT_MODEL)
    assert type(mlp).__name__ == "MLPRegressor"
    assert mlp.activation == artifact.activation == "tanh"
    assert mlp.out_activation_ == "identity"
    assert [64, *mlp.hidden_layer_sizes, 64] == artifact.layer_sizes
    for mine, theirs in zip(
        mlp.coefs_ + mlp.intercepts_, artifact.weights + artifact.biases, strict=True
    ):
        assert mine.dtype == np.float64
        np.testing.assert_array_equal(mine, theirs)  # float32 weights, exactly
    assert sk_model.latent_layer == artifact.latent_layer == 3
    assert sk_model.latent_size == 2


def test_scikit_learn_predicts_what_the_service_computes(sk_model, rows):
    # In float64 both compute the same function: they agree to float64 rounding...
    exact = _float64_autoencoder()
    vectors, errors = exact.reconstruct(rows)
    ours = sk_model.answers(rows)
    np.testing.assert_allclose(ours.vectors, vectors, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.errors, errors, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.latent, exact.encode(rows), rtol=0, atol=1e-12)
    # ...and the reconstruction is MLPRegressor.predict, clipped and mapped back to pixels.
    scaler = sk_model.pipeline.named_steps["scale"]
    predicted = scaler.inverse_transform(np.clip(sk_model.pipeline.predict(rows), 0.0, 1.0))
    np.testing.assert_allclose(predicted, vectors, rtol=0, atol=1e-9)
    # The committed float32 model (what digitcode serves) agrees within the tolerance, with room:
    # within half of it, for few rows (np.tanh) and for many (the folded activations).
    served = Autoencoder.from_dir(DEFAULT_MODEL)
    for X, theirs in ((rows[:5], sk_model.answers(rows[:5])), (rows, ours)):
        served_vectors, served_errors = served.reconstruct(X)
        reference = Answers(served.encode(X), served_vectors, served_errors)
        check_answers(theirs, reference, atol=TOLERANCE / 2, rtol=TOLERANCE / 2)


def test_the_check_tolerance_catches_a_wrong_weight(sk_model, rows):
    artifact = load_artifact(DEFAULT_MODEL)
    weights = [w.copy() for w in artifact.weights]
    weights[0][10, 0] *= 1.01  # one weight of the first layer, off by 1 %: 4e-3 pixels
    wrong = sklearn_autoencoder.build(
        weights, artifact.biases, artifact.activation, artifact.scaler_min, artifact.scaler_scale
    )
    vectors, errors = sklearn_autoencoder.reconstruct(wrong, rows)
    with pytest.raises(AnswerMismatchError, match="vectors"):
        check_answers(
            sk_model.answers(rows),
            Answers(sk_model.answers(rows).latent, vectors, errors),
            atol=TOLERANCE,
            rtol=TOLERANCE,
        )


def test_out_of_range_pixels_are_clipped_as_the_service_does(sk_model):
    X = np.zeros((3, 64))
    X[1] = 16.0
    X[2, ::2] = 16.0
    exact = _float64_autoencoder()
    ours = sk_model.answers(X)
    vectors, errors = exact.reconstruct(X)
    np.testing.assert_allclose(ours.vectors, vectors, atol=1e-9)
    np.testing.assert_allclose(ours.errors, errors, atol=1e-12)
    assert ours.vectors.min() >= 0.0 and ours.vectors.max() <= 16.0


def test_the_joblib_file_loads_to_the_same_model(sk_model, rows, tmp_path):
    path = write_model(sk_model, tmp_path / "model.joblib")
    pipeline, latent_layer = sklearn_autoencoder.load(path)
    assert latent_layer == sk_model.latent_layer
    np.testing.assert_array_equal(
        sklearn_autoencoder.encode(pipeline, latent_layer, rows), sk_model.answers(rows).latent
    )


def test_bodies_are_each_servers_native_json(rows):
    bodies = request_bodies(rows, (1, 1000))
    assert sorted(bodies) == ["bentoml", "digitcode", "litserve", "mlflow"]
    some = rows[:1000]
    for op in OPERATIONS:
        # digitcode's own body, as the Python client sends it; BentoML's (one field per
        # parameter of the API, `vectors`) and the LitServe script's are the same bytes.
        assert bodies["digitcode"][(op, 1000)] == json_body(some)
        assert bodies["bentoml"][(op, 1000)] == json_body(some)
        assert bodies["litserve"][(op, 1)] == json_body(rows[:1])
        mlflow = orjson.loads(bodies["mlflow"][(op, 1000)])
        assert mlflow == {"inputs": some.tolist(), "params": {"output": op}}
    assert FORMATS["mlflow"].paths == {"encode": "/invocations", "reconstruct": "/invocations"}
    assert FORMATS["bentoml"].paths == {"encode": "/encode", "reconstruct": "/reconstruct"}


def _answer(server: str, operation: str, answers: Answers) -> object:
    """What ``server`` answers (parsed JSON) for an ``operation``, given the model's answers."""
    if operation == "encode":
        latent = answers.latent.tolist()
        return {"digitcode": {"latent": latent}, "mlflow": {"predictions": latent}}.get(
            server, latent if server == "bentoml" else {"latent": latent}
        )
    rec = {"vectors": answers.vectors.tolist(), "errors": answers.errors.tolist()}
    return {"predictions": rec} if server == "mlflow" else rec


def _mock(server: str, model: SklearnModel, tamper=None, status=200) -> httpx.Client:
    """A fake ``server`` that answers from the scikit-learn model, in its own format."""
    fmt = FORMATS[server]

    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if server == "mlflow":
            X, operation = np.asarray(body["inputs"]), body["params"]["output"]
        else:
            X = np.asarray(body["vectors"])
            operation = next(op for op, path in fmt.paths.items() if path == request.url.path)
        answer = _answer(server, operation, model.answers(X))
        if tamper is not None:
            tamper(operation, answer)
        return httpx.Response(status, json=answer)

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://peer")


def _bodies(server, rows):
    return {op: request_bodies(rows, (len(rows),))[server][(op, len(rows))] for op in OPERATIONS}


@pytest.mark.parametrize("server", sorted(FORMATS))
def test_answers_are_read_in_each_format_and_checked(server, sk_model, rows):
    some = rows[:20]
    with _mock(server, sk_model) as client:
        answers = fetch_answers(client, server, _bodies(server, some))
    assert answers.latent.shape == (20, 2)
    assert answers.vectors.shape == (20, 64)
    assert answers.errors.shape == (20,)
    check_answers(sk_model.answers(some), answers, atol=TOLERANCE, rtol=TOLERANCE)


def _shift_first_pixel(operation, answer):
    if operation == "reconstruct":
        rec = answer.get("predictions", answer)
        rec["vectors"][0][5] += 0.01


def _shift_first_code(operation, answer):
    if operation == "encode":
        latent = answer if isinstance(answer, list) else next(iter(answer.values()))
        latent[0][1] += 1e-3


@pytest.mark.parametrize("server", sorted(FORMATS))
@pytest.mark.parametrize("tamper", [_shift_first_pixel, _shift_first_code])
def test_a_wrong_answer_is_refused(server, tamper, sk_model, rows):
    some = rows[:20]
    with _mock(server, sk_model, tamper) as client:
        answers = fetch_answers(client, server, _bodies(server, some))
    with pytest.raises(AnswerMismatchError, match="differ"):
        check_answers(sk_model.answers(some), answers, atol=TOLERANCE, rtol=TOLERANCE)


def test_the_bench_refuses_a_server_that_answers_wrong(sk_model, tmp_path):
    bench = PeersBench(parse_args(["--rounds", "1"]), tmp_path, sk_model)
    with _mock("litserve", sk_model) as client:
        bench.check("litserve", client)  # 1 and 1000 rows: agree
    with (
        _mock("litserve", sk_model, _shift_first_pixel) as client,
        pytest.raises(AnswerMismatchError, match="litserve answers for 1 rows differ"),
    ):
        bench.check("litserve", client)
    # One body file and one wrk script per server and workload, the script reading that file.
    script = (tmp_path / "mlflow-encode-1000.lua").read_text()
    assert str(tmp_path / "mlflow-encode-1000.json") in script
    assert orjson.loads((tmp_path / "mlflow-encode-1000.json").read_bytes())["params"] == {
        "output": "encode"
    }


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        ({"nothing": []}, 200, "no 'vectors'"),
        ({"vectors": [[1.0, 2.0]], "errors": [0.1]}, 200, "unexpected shape"),
        ({"detail": "overloaded"}, 503, "answered 503"),
    ],
)
def test_a_malformed_answer_is_refused(answer, status, message, rows):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/encode":
            return httpx.Response(200, json={"latent": [[0.0, 0.0]]})
        return httpx.Response(status, json=answer)

    with (
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://peer") as client,
        pytest.raises(AnswerMismatchError, match=message),
    ):
        fetch_answers(client, "litserve", _bodies("litserve", rows[:1]))


def _result(requests, p50_us, p99_us, non2xx=0, read_errors=0):
    return WrkResult(
        requests=requests,
        duration_us=5_000_000,
        bytes=requests * 100,
        non2xx=non2xx,
        first_bad_status=503 if non2xx else 0,
        errors_connect=0,
        errors_read=read_errors,
        errors_write=0,
        errors_status=non2xx,
        errors_timeout=0,
        latency_mean_us=float(p50_us),
        latency_p50_us=p50_us,
        latency_p99_us=p99_us,
        latency_max_us=p99_us * 2,
    )


def _sample_report(problems=()):
    keys = [w.key for w in WORKLOADS]
    per_second = {  # requests in 5 s per server and workload
        "digitcode": (7216, 344, 949),
        "mlflow": (994, 10, 20),
        "bentoml": (664, 25, 110),
        "litserve": (1085, 20, 0),
    }
    runs = []
    for server, counts in per_second.items():
        for w, requests in zip(WORKLOADS, counts, strict=True):
            result = _result(requests, 5230, 10400, non2xx=3 if requests == 0 else 0)
            v = requests / 5 * w.vectors
            rounds = (0.9 * v, v, 1.1 * v)
            runs.append(Measurement(server, w.key, w.vectors, w.connections, result, rounds=rounds))
    servers = {
        name: ServerRounds([1.2, 1.3, 1.1], [77.0, 78.5], [77.0, 78.5], [{"pid": 1}])
        for name in per_second
    }
    servers["litserve"].processes = [{"pid": n} for n in range(6)]
    servers["litserve"].total_rss_mb = [730.24]
    meta = {
        "date": "2026-11-30",
        "git": "abc1234",
        "cpus": 2,
        "cpu_model": "AMD EPYC",
        "python": "3.11.7",
        "versions": {"mlflow": "3.17.2", "bentoml": "1.4.40", "litserve": "0.2.19"},
        "packages": {"scikit-learn": "1.9.1", "numpy": "2.4.6"},
        "rounds": 3,
        "duration_s": 5.0,
        "warmup_s": 2.0,
        "server_cpus": "0",
        "wrk_cpus": "1",
    }
    # Through JSON, as the README block is made from the saved file.
    return json.loads(json.dumps(report_dict(meta, runs, servers, keys, list(problems))))


def test_the_markdown_shows_the_measured_figures():
    report = _sample_report(["litserve encode-1000: 3 non-2xx (first status 503)"])
    text = markdown(report)
    intro = " ".join(text.split("\n\n")[0].split())
    assert all(len(line) <= 100 for line in text.split("\n\n")[0].splitlines())
    assert "Measured 2026-11-30 on commit abc1234, on 2 × AMD EPYC" in intro
    assert "3 rounds of 5 s after 2 s of warm-up" in intro
    assert (
        "| reconstruct-1 | **digitcode** | 1,443.2 | 1,443 | 5.23 | 10.40 | 0 / 0 | 20% |" in text
    )
    assert "| encode-1000 | mlflow | 4.0 | 4,000 | 5.23 | 10.40 | 0 / 0 | 20% |" in text
    assert "| encode-1000 | litserve | 0.0 | 0 | 5.23 | 10.40 | 3 / 0 (**invalid**) |" in text
    # digitcode over the best peer with a valid run (litserve's encode-1000 is not).
    assert "| reconstruct-1 | 1,443 | litserve | 217 | 6.65× |" in text
    assert "| encode-1000 | 189,800 | bentoml | 22,000 | 8.63× |" in text
    assert "| litserve | 0.2.19 | 1.20 | 6 | 78.5 | 730.2 |" in text
    assert "- litserve encode-1000: 3 non-2xx (first status 503)" in text
    assert report["valid"] is False
    assert report["ratios"][2]["best_peer"] == "bentoml"


def test_the_readme_block_is_replaced_between_its_markers():
    text = f"before\n{START_MARKER}\nold table\n{END_MARKER}\nafter\n"
    assert replace_block(text, "new") == f"before\n{START_MARKER}\nnew\n{END_MARKER}\nafter\n"
    for broken in ("no markers", f"{END_MARKER}\n{START_MARKER}", f"{START_MARKER}" * 2):
        with pytest.raises(ValueError):
            replace_block(broken, "new")


def test_the_readme_block_is_generated_from_the_committed_json():
    report = json.loads((ROOT / "docs" / "performance" / "peers.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split(START_MARKER, 1)[1].split(END_MARKER, 1)[0]
    assert block.strip() == markdown(report).strip()
    assert report["valid"], report["problems"]
    assert set(report["servers"]) == {"digitcode", "mlflow", "bentoml", "litserve"}


def test_the_peers_are_pinned_with_the_projects_scikit_learn_and_numpy():
    lock = (ROOT / "requirements-dev.lock").read_text()
    for name in ("mlflow", "bentoml", "litserve"):
        pins = dict(
            line.split("==")
            for line in requirements_file(name).read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert name in pins
        assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in pins.values()), pins
        for shared in ("scikit-learn", "numpy", "joblib"):
            assert f"\n{shared}=={pins[shared]} " in lock, shared


def test_arguments():
    args = parse_args(["--peers", "mlflow,litserve", "--lock", ""])
    assert args.peers == ["mlflow", "litserve"] and args.lock is None
    assert parse_args([]).lock is not None
    with pytest.raises(SystemExit):
        parse_args(["--peers", "torchserve"])
    with pytest.raises(SystemExit):
        parse_args(["--no-run"])


@pytest.mark.slow
def test_a_server_and_every_process_it_started_are_stopped(tmp_path):
    # A shell that leaves a child behind, then becomes an HTTP server answering 200 on "/".
    script = f"sleep 300 & exec {sys.executable} -m http.server {{port}} --bind 127.0.0.1"
    spec = ServerSpec("toy", ["sh", "-c", script])
    with start_peer(spec, ready_path="/", cwd=tmp_path, ready_timeout_s=30) as peer:
        assert peer.startup_s > 0
        memory = peer.memory()
        assert len(memory) == 2 and all(p.rss_mb > 0 for p in memory)
        assert any("http.server" in p.command for p in memory)
        assert any(p.command.startswith("sleep") for p in memory)
        session = peer.process.pid
        assert len(session_members(session)) == 2
    assert session_members(session) == []
