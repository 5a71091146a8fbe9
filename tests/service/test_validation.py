"""A matrix of bad inputs: each gets a 4xx JSON answer naming what is wrong and where."""

import io
import json

import numpy as np
import pytest

GOOD = [1.0] * 64


def _with(index: int, value) -> list:
    row = list(GOOD)
    row[index] = value
    return row


def _post(client, path: str, content: bytes | str, content_type: str = "application/json"):
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=content, headers=headers)


# (path, raw JSON body, status, expected loc, expected message fragment)
CASES = [
    ("/encode", {"vectors": [GOOD, GOOD[:63]]}, 422, ["body", "vectors", 1], "at least 64"),
    ("/encode", {"vectors": [[*GOOD, 1.0]]}, 422, ["body", "vectors", 0], "at most 64"),
    ("/encode", {"vectors": []}, 422, ["body", "vectors"], "at least 1 item"),
    (
        "/encode",
        {"vectors": [_with(5, -1)]},
        422,
        ["body", "vectors", 0, 5],
        "Value -1.0 is outside [0, 16]",
    ),
    (
        "/encode",
        {"vectors": [GOOD, _with(63, 16.5)]},
        422,
        ["body", "vectors", 1, 63],
        "Value 16.5 is outside [0, 16]",
    ),
    ("/encode", {"vectors": [_with(2, "3")]}, 422, ["body", "vectors", 0, 2], "valid number"),
    ("/encode", {"vectors": [_with(2, None)]}, 422, ["body", "vectors", 0, 2], "valid number"),
    ("/encode", {"vectors": [_with(7, True)]}, 422, ["body", "vectors", 0, 7], "valid number"),
    ("/encode", {"vectors": [[True] * 64]}, 422, ["body", "vectors", 0, 0], "valid number"),
    ("/encode", {"vectors": [_with(1, [1.0])]}, 422, ["body", "vectors", 0, 1], "valid number"),
    ("/encode", {"vectors": [GOOD], "extra": 1}, 422, ["body", "extra"], "Extra inputs"),
    ("/encode", {"latent": [[0, 0]]}, 422, ["body", "vectors"], "Field required"),
    ("/encode", {"vectors": GOOD[:3]}, 422, ["body", "vectors", 0], "valid list"),
    ("/encode", {"vectors": "x"}, 422, ["body", "vectors"], "valid list"),
    ("/encode", [GOOD], 422, ["body"], "valid dictionary"),
    ("/encode", {"vectors": [_with(0, 10**400)]}, 422, ["body"], "number is infinity"),
    (
        "/encode",
        {"vectors": [_with(0, 10**30)]},
        422,
        ["body", "vectors", 0, 0],
        "less than or equal to 16",
    ),
    ("/reconstruct", {"vectors": [GOOD[:10]]}, 422, ["body", "vectors", 0], "at least 64"),
    (
        "/reconstruct",
        {"vectors": [_with(3, -0.5)]},
        422,
        ["body", "vectors", 0, 3],
        "is outside [0, 16]",
    ),
    ("/decode", {"latent": [[0.1]]}, 422, ["body", "latent", 0], "at least 2"),
    ("/decode", {"latent": [[0.1, 0.2, 0.3]]}, 422, ["body", "latent", 0], "at most 2"),
    ("/decode", {"latent": [[0.1, "a"]]}, 422, ["body", "latent", 0, 1], "valid number"),
    (
        "/decode",
        {"latent": [[0.1, 1e300]]},
        422,
        ["body", "latent", 0, 1],
        "outside [-1e+06, 1e+06]",
    ),
    ("/decode", {"latent": []}, 422, ["body", "latent"], "at least 1 item"),
    ("/decode", {"vectors": [GOOD]}, 422, ["body", "latent"], "Field required"),
]


@pytest.mark.parametrize(("path", "body", "status", "loc", "fragment"), CASES)
def test_bad_body_is_refused_with_location(client, path, body, status, loc, fragment):
    response = _post(client, path, json.dumps(body))
    assert response.status_code == status
    errors = response.json()["detail"]
    assert any(e["loc"] == loc and fragment in e["msg"] for e in errors), errors
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("literal", "fragment"),
    [
        ("NaN", "Invalid JSON"),
        ("Infinity", "Invalid JSON"),
        ("-Infinity", "Invalid JSON"),
        ("1e400", "Invalid JSON"),
    ],
)
def test_non_finite_literals_are_refused(client, literal, fragment):
    body = '{"vectors": [[' + ",".join(["1"] * 63 + [literal]) + "]]}"
    response = _post(client, "/encode", body)
    assert response.status_code == 422
    assert fragment in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b'{"vectors": [[1,2,]]}', b"\xff\xfe", b"[" * 5000 + b"]" * 5000],
)
def test_malformed_json(client, body):
    response = _post(client, "/encode", body)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body"] and detail["type"] == "json_invalid"


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type(client, content_type):
    response = _post(client, "/encode", json.dumps({"vectors": [GOOD]}), content_type)
    assert response.status_code == 415
    assert "Content-Type must be application/json" in response.json()["detail"][0]["msg"]


def test_json_content_type_with_charset_is_fine(client):
    response = _post(
        client, "/encode", json.dumps({"vectors": [GOOD]}), "application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_batch_over_the_limit(client, settings):
    rows = [GOOD] * (settings.max_batch + 1)
    response = _post(client, "/reconstruct", json.dumps({"vectors": rows}))
    assert response.status_code == 413
    msg = response.json()["detail"][0]["msg"]
    assert (
        f"Batch of {settings.max_batch + 1} rows exceeds the limit of {settings.max_batch}" in msg
    )


def test_body_over_the_limit_is_refused_before_parsing(client, settings):
    body = b'{"vectors": [' + b" " * (settings.body_limit + 1) + b"]}"
    response = _post(client, "/encode", body)
    assert response.status_code == 413
    assert (
        f"exceeds the limit of {settings.body_limit} bytes" in response.json()["detail"][0]["msg"]
    )


def test_error_list_is_capped(client, settings):
    # Out-of-range values: the first one is named.
    rows = [[-1.0] * 64] * settings.max_batch
    response = _post(client, "/encode", json.dumps({"vectors": rows}))
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "vectors", 0, 0]]
    # Malformed rows (the precise path): at most 20 of the 64 x max_batch problems.
    strings = [["x"] * 64] * settings.max_batch
    response = _post(client, "/encode", json.dumps({"vectors": strings}))
    assert response.status_code == 422
    assert len(response.json()["detail"]) == 20


def test_wrong_method_and_path(client):
    assert client.get("/encode").status_code == 405
    assert client.post("/nowhere", json={}).status_code == 404


def test_the_same_range_mistake_reads_the_same_on_every_transport(client):
    # 8-bit pixels (0..255) instead of optdigits counts (0..16): a hint says so.
    rows = np.tile(np.arange(64) * 4.0, (3, 1))  # 0..252
    as_json = _post(client, "/encode", json.dumps({"vectors": rows.tolist()}))
    buffer = io.BytesIO()
    np.save(buffer, rows)
    as_npy = _post(client, "/encode", buffer.getvalue(), "application/x-npy")
    oip = client.post(
        "/v2/models/digitcode/infer",
        json={
            "inputs": [
                {"name": "vectors", "shape": [3, 64], "datatype": "FP64", "data": rows.tolist()}
            ]
        },
    )
    (json_item,) = as_json.json()["detail"]
    (npy_item,) = as_npy.json()["detail"]
    assert json_item["msg"] == npy_item["msg"]
    assert json_item["msg"].startswith("Value 20.0 is outside [0, 16]: these look like 8-bit")
    assert (json_item["loc"], npy_item["loc"]) == (["body", "vectors", 0, 5], ["body", 0, 5])
    assert oip.status_code == 400 and json_item["msg"] in oip.json()["error"]


def test_no_8_bit_hint_for_other_mistakes(client):
    rows = np.full((1, 64), 300.0)  # beyond 8-bit too
    msg = _post(client, "/encode", json.dumps({"vectors": rows.tolist()})).json()["detail"][0]
    assert msg["msg"] == "Value 300.0 is outside [0, 16]"
    codes = {"latent": [[2e6, 0.0]]}
    assert "8-bit" not in _post(client, "/decode", json.dumps(codes)).text


def test_npy_bytes_sent_as_json_get_a_hint(client):
    buffer = io.BytesIO()
    np.save(buffer, np.ones((1, 64)))
    response = _post(client, "/encode", buffer.getvalue(), "application/json")
    assert response.status_code == 422
    assert "send it with Content-Type: application/x-npy" in response.json()["detail"][0]["msg"]
