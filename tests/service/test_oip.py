"""The Open Inference Protocol (KServe V2) REST endpoints, in-process, against the native API."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from service.model import Autoencoder

INFER = "/v2/models/digitcode/infer"
DECODER = "/v2/models/digitcode-decoder/infer"
HEADER_LENGTH = "Inference-Header-Content-Length"


def _input(X: np.ndarray, datatype: str = "FP32", name: str = "vectors", flat: bool = False):
    data = X.ravel().tolist() if flat else X.tolist()
    return {"name": name, "shape": list(X.shape), "datatype": datatype, "data": data}


def _binary_request(
    X: np.ndarray,
    dtype: type = np.float32,
    name: str = "vectors",
    outputs: list | None = None,
    **extra,
) -> tuple[bytes, dict[str, str]]:
    data = np.ascontiguousarray(X, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(X.shape),
                "datatype": "FP32" if dtype == np.float32 else "FP64",
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        **extra,
    }
    if outputs is not None:
        header["outputs"] = outputs
    head = orjson.dumps(header)
    return head + data, {HEADER_LENGTH: str(len(head))}


def _split_answer(response) -> tuple[dict, bytes]:
    length = response.headers.get(HEADER_LENGTH)
    if length is None:
        return response.json(), b""
    return json.loads(response.content[: int(length)]), response.content[int(length) :]


def _outputs(response) -> dict[str, np.ndarray]:
    """Every output of an answer as an array, JSON or binary."""
    header, binary = _split_answer(response)
    arrays, offset = {}, 0
    for output in header["outputs"]:
        dtype = {"FP32": np.float32, "FP64": np.float64, "BOOL": np.bool_}[output["datatype"]]
        if "data" in output:
            array = np.asarray(output["data"], dtype=dtype)
        else:
            size = output["parameters"]["binary_data_size"]
            array = np.frombuffer(binary[offset : offset + size], dtype=np.dtype(dtype))
            offset += size
        arrays[output["name"]] = array.reshape(output["shape"])
    assert offset == len(binary)
    return arrays


# -- health and metadata -------------------------------------------------------------------


def test_server_metadata_lists_the_binary_extension(client):
    response = client.get("/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "digitcode" and "binary_tensor_data" in body["extensions"]


def test_health_bodies_are_what_kserve_reads(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_not_ready_is_not_200(settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(settings)  # no lifespan run: nothing loaded yet
    with TestClient(app, raise_server_exceptions=True) as raw:
        app.state.dataplane.repository = None
        response = raw.get("/v2/health/ready")
    assert response.status_code == 503
    assert "error" in response.json()


def test_model_metadata(client, default_model):
    body = client.get("/v2/models/digitcode").json()
    assert body["name"] == "digitcode"
    assert body["versions"] == [default_model.version]
    assert body["inputs"] == [{"name": "vectors", "datatype": "FP32", "shape": [-1, 64]}]
    assert body["outputs"] == [
        {"name": "latent", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "reconstruction", "datatype": "FP32", "shape": [-1, 64]},
        {"name": "error", "datatype": "FP32", "shape": [-1]},
        {"name": "distance", "datatype": "FP32", "shape": [-1]},
        {"name": "is_outlier", "datatype": "BOOL", "shape": [-1]},
        {"name": "feature_score", "datatype": "FP32", "shape": [-1, 64]},
    ]
    assert body["parameters"]["outlier_quantile"] == 0.99
    assert body["parameters"]["outlier_threshold"] == float(default_model.threshold)
    decoder = client.get(f"/v2/models/digitcode-decoder/versions/{default_model.version}").json()
    assert decoder["inputs"] == [{"name": "latent", "datatype": "FP32", "shape": [-1, 2]}]
    assert decoder["outputs"] == [{"name": "vectors", "datatype": "FP32", "shape": [-1, 64]}]


def test_model_ready_and_unknown_models(client, default_model):
    ready = client.get(f"/v2/models/digitcode/versions/{default_model.version}/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    for path in (
        "/v2/models/nothing",
        "/v2/models/nothing/ready",
        "/v2/models/digitcode/versions/0/ready",
        "/v2/models/digitcode/versions/0",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"error"}


# -- inference, JSON -----------------------------------------------------------------------


def test_json_infer_gives_the_native_numbers(client, sample_rows):
    native_latent = client.post("/encode", json={"vectors": sample_rows.tolist()}).json()["latent"]
    native = client.post("/reconstruct", json={"vectors": sample_rows.tolist()}).json()
    response = client.post(INFER, json={"id": "42", "inputs": [_input(sample_rows)]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "42" and body["model_name"] == "digitcode"
    assert body["model_version"] == response.headers["x-model-version"]
    out = _outputs(response)
    # Every output but the per-pixel scores, which only come when named.
    names = [o["name"] for o in body["outputs"]]
    assert names == ["latent", "reconstruction", "error", "distance", "is_outlier"]
    assert out["is_outlier"].tolist() == native["is_outlier"]
    assert body["parameters"] == {
        "outlier_threshold": native["threshold"],
        "distance_threshold": native["distance_threshold"],
        "outlier_quantile": 0.99,
    }
    # The same float32 values, printed the same way.
    assert out["latent"].tolist() == np.asarray(native_latent, np.float32).tolist()
    assert out["reconstruction"].tolist() == np.asarray(native["vectors"], np.float32).tolist()
    assert out["error"].tolist() == np.asarray(native["errors"], np.float32).tolist()
    assert out["distance"].tolist() == np.asarray(native["distances"], np.float32).tolist()


def test_flat_and_nested_data_are_the_same(client, sample_rows):
    nested = client.post(INFER, json={"inputs": [_input(sample_rows)]}).json()
    flat = client.post(INFER, json={"inputs": [_input(sample_rows, flat=True)]}).json()
    assert nested == flat


def test_decoder_model_matches_decode(client, default_model):
    Z = np.array([[0.0, 0.0], [0.5, -0.5], [-1.0, 0.25]])
    native = client.post("/decode", json={"latent": Z.tolist()}).json()["vectors"]
    response = client.post(DECODER, json={"inputs": [_input(Z, "FP64", "latent")]})
    assert response.status_code == 200
    out = _outputs(response)["vectors"]
    assert out.dtype == np.float64 and out.shape == (3, 64)  # output datatype = input datatype
    np.testing.assert_array_equal(out.astype(np.float32), np.asarray(native, np.float32))
    np.testing.assert_array_equal(out.astype(np.float32), default_model.decode(Z))


def test_outputs_pick_what_is_returned_and_computed(client, sample_rows, monkeypatch):
    def forbidden(self, X):
        raise AssertionError("reconstruction computed for a latent-only request")

    monkeypatch.setattr(Autoencoder, "forward", forbidden)
    body = {"inputs": [_input(sample_rows)], "outputs": [{"name": "latent"}]}
    response = client.post(INFER, json=body)
    assert response.status_code == 200
    assert [o["name"] for o in response.json()["outputs"]] == ["latent"]


def test_no_content_type_parameters_and_unknown_query_are_fine(client, sample_rows):
    body = orjson.dumps(
        {
            "inputs": [{**_input(sample_rows[:2]), "parameters": {"note": "x"}}],
            "parameters": {"priority": 0, "custom": "yes"},
            "outputs": [{"name": "error", "parameters": {"ignored": 1}}],
        }
    )
    response = client.post(INFER + "?trace=1&foo=bar", content=body, headers={})
    assert response.status_code == 200, response.text
    assert _outputs(response)["error"].shape == (2,)


# -- inference, binary tensors -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_in_and_out(client, sample_rows, default_model, dtype):
    outputs = [{"name": n, "parameters": {"binary_data": True}} for n in ("latent", "error")]
    body, headers = _binary_request(sample_rows, dtype, outputs=outputs)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    out = _outputs(response)
    assert out["latent"].dtype == dtype and out["error"].dtype == dtype
    np.testing.assert_array_equal(out["latent"], default_model.encode(sample_rows).astype(dtype))
    np.testing.assert_array_equal(
        out["error"], default_model.reconstruct(sample_rows)[1].astype(dtype)
    )


def test_mixed_binary_and_json_outputs(client, sample_rows, default_model):
    body, headers = _binary_request(
        sample_rows,
        outputs=[
            {"name": "latent"},
            {"name": "reconstruction", "parameters": {"binary_data": True}},
        ],
    )
    response = client.post(INFER, content=body, headers=headers)
    header, _ = _split_answer(response)
    assert "data" in header["outputs"][0] and "data" not in header["outputs"][1]
    out = _outputs(response)
    np.testing.assert_array_equal(out["reconstruction"], default_model.reconstruct(sample_rows)[0])


def test_binary_data_output_applies_to_every_output(client, sample_rows):
    body, headers = _binary_request(sample_rows, parameters={"binary_data_output": True})
    response = client.post(INFER, content=body, headers=headers)
    header, binary = _split_answer(response)
    assert all("data" not in o for o in header["outputs"])
    assert len(binary) == 10 * (2 + 64 + 1 + 1) * 4 + 10  # is_outlier: one byte each
    # JSON input, binary output
    response = client.post(
        INFER,
        json={"inputs": [_input(sample_rows)], "parameters": {"binary_data_output": True}},
    )
    assert response.headers["content-type"] == "application/octet-stream"
    assert _outputs(response)["latent"].shape == (10, 2)


# -- errors ----------------------------------------------------------------------------------


def _error(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert fragment in body["error"], body["error"]


GOOD = np.ones((2, 64))


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{", 400, "Invalid JSON"),
        (b"[]", 400, "must be a JSON object"),
        (b"{}", 400, "inputs must be a non-empty list"),
        ({"inputs": [_input(GOOD, "INT32")]}, 400, "datatype 'INT32' is not supported"),
        ({"inputs": [_input(GOOD, name="pixels")]}, 400, "has one input, 'vectors'"),
        ({"inputs": [_input(GOOD), _input(GOOD)]}, 400, "more than once"),
        ({"inputs": [{**_input(GOOD), "shape": [2, 63]}]}, 400, "shape must be [n, 64]"),
        ({"inputs": [{**_input(GOOD), "shape": [3, 64]}]}, 400, "holds 128 numbers"),
        ({"inputs": [{**_input(GOOD), "shape": "2x64"}]}, 400, "shape must be a list"),
        ({"inputs": [{**_input(GOOD), "data": [["a"] * 64] * 2}]}, 400, "only numbers"),
        ({"inputs": [{**_input(GOOD), "data": [[True] * 64] * 2}]}, 400, "only numbers"),
        ({"inputs": [{**_input(GOOD), "data": None}]}, 400, "data is missing"),
        ({"inputs": [_input(GOOD * 17)]}, 400, "inputs.vectors.0.0: Value 17.0 is outside"),
        ({"inputs": [_input(GOOD)], "outputs": [{"name": "z"}]}, 400, "no output 'z'"),
        ({"inputs": [_input(GOOD)], "outputs": []}, 400, "outputs must be a non-empty list"),
        (
            {"inputs": [_input(GOOD)], "outputs": [{"name": "latent"}, {"name": "latent"}]},
            400,
            "'latent' is asked for more than once",
        ),
        (
            {"inputs": [{**_input(GOOD), "parameters": {"binary_data_size": 512}}]},
            400,
            "give data or binary_data_size, not both",
        ),
        (
            {"inputs": [{**_input(GOOD), "data": [[1.0] * 32] * 4}]},
            400,
            "flat or 2 rows of 64 numbers",
        ),
        (
            {"inputs": [{**_input(GOOD), "data": [[[1.0] * 64]] * 2}]},
            400,
            "flat or 2 rows of 64 numbers",
        ),
        (
            {"inputs": [{**_input(GOOD), "data": [[1.0] * 64, *[1.0] * 64]}]},
            400,
            "flat or 2 rows of 64 numbers",
        ),
        ({"inputs": [_input(GOOD)], "id": 7}, 400, "id must be a string"),
        ({"inputs": [_input(np.ones((51, 64)))]}, 413, "exceeds the limit of 50"),
    ],
)
def test_bad_requests_say_what_and_where(client, body, status, fragment):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    _error(client.post(INFER, content=content), status, fragment)
    assert client.get("/v2/health/ready").status_code == 200


def test_binary_errors(client):
    body, headers = _binary_request(GOOD)
    _error(client.post(INFER, content=body[:-4], headers=headers), 400, "binary data")
    _error(client.post(INFER, content=body + b"xx", headers=headers), 400, "bytes after")
    bad_length = {HEADER_LENGTH: str(len(body) + 1)}
    _error(client.post(INFER, content=body, headers=bad_length), 400, HEADER_LENGTH)
    superscript = {HEADER_LENGTH: "²".encode("latin-1")}  # isdigit() says yes; int() says no
    _error(client.post(INFER, content=body, headers=superscript), 400, HEADER_LENGTH)
    _error(client.post(INFER, content=body), 400, f"needs the {HEADER_LENGTH} header")
    nan = GOOD.copy()
    nan[1, 5] = np.nan
    body, headers = _binary_request(nan)
    _error(client.post(INFER, content=body, headers=headers), 400, "vectors.1.5: Value nan")


def test_unknown_model_and_version_are_404(client, default_model):
    body = orjson.dumps({"inputs": [_input(GOOD)]})
    _error(client.post("/v2/models/other/infer", content=body), 404, "Unknown model 'other'")
    _error(
        client.post("/v2/models/digitcode/versions/9/infer", content=body),
        404,
        "Unknown version '9'",
    )
    ok = client.post(f"/v2/models/digitcode/versions/{default_model.version}/infer", content=body)
    assert ok.status_code == 200


def test_body_limit_applies(client, settings):
    body = b'{"inputs": [' + b" " * (settings.body_limit + 1) + b"]}"
    _error(client.post(INFER, content=body), 413, "exceeds the limit")


def test_wrong_method_is_405_in_the_protocols_format(client):
    response = client.get(INFER)
    _error(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "POST"


def test_a_kept_error_does_not_break_the_next_request():
    # Error trackers (and a slow client's answer still being sent) keep exceptions alive; the
    # thread's JSON parser must still parse the next request.
    from service.errors import RequestError
    from service.protocols.oip import _read_request

    bad = {"inputs": [{**_input(GOOD), "shape": [-1, 64]}]}
    with pytest.raises(RequestError) as kept:
        _read_request(orjson.dumps(bad), False)
    good = _read_request(orjson.dumps({"inputs": [_input(GOOD)]}), False)
    assert kept.value.status_code == 400 and good.inputs[0].shape == [2, 64]
