"""The binary path: ``application/x-npy`` bodies and answers."""

import io
import pickle

import numpy as np
import pytest

NPY = "application/x-npy"


def _npy(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def _load(content: bytes) -> np.ndarray:
    array: np.ndarray = np.load(io.BytesIO(content), allow_pickle=False)
    return array


def _post(client, path, body: bytes, accept: str | None = NPY):
    headers = {"content-type": NPY}
    if accept:
        headers["accept"] = accept
    return client.post(path, content=body, headers=headers)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encode_answers_in_the_request_dtype(client, default_model, sample_rows, dtype):
    response = _post(client, "/encode", _npy(sample_rows.astype(dtype)))
    assert response.status_code == 200
    assert response.headers["content-type"] == NPY
    Z = _load(response.content)
    assert Z.shape == (10, 2) and Z.dtype == np.dtype(dtype)
    # Computed in the model's precision whatever the request's, then given in the request's.
    np.testing.assert_array_equal(Z, default_model.encode(sample_rows).astype(dtype))


def test_npy_and_json_give_the_same_answers(client, default_model, sample_rows):
    as_json = client.post("/reconstruct", json={"vectors": sample_rows.tolist()}).json()
    out = _load(_post(client, "/reconstruct", _npy(sample_rows)).content)
    assert out.shape == (10, 65)
    # JSON prints the model's float32 values with the shortest digits that read back as them.
    in_model_precision = out.astype(default_model.dtype)
    np.testing.assert_array_equal(out, in_model_precision)
    np.testing.assert_array_equal(
        in_model_precision[:, :64], np.array(as_json["vectors"], dtype=default_model.dtype)
    )
    np.testing.assert_array_equal(
        in_model_precision[:, 64], np.array(as_json["errors"], dtype=default_model.dtype)
    )


def test_decode_npy(client, default_model):
    Z = np.array([[0.1, -0.3], [0.7, 0.2]])
    X = _load(_post(client, "/decode", _npy(Z)).content)
    assert X.shape == (2, 64)
    np.testing.assert_array_equal(X, default_model.decode(Z))


def test_accept_chooses_the_answer_format(client, sample_rows):
    json_answer = _post(client, "/encode", _npy(sample_rows), accept="application/json")
    assert json_answer.headers["content-type"] == "application/json"
    assert len(json_answer.json()["latent"]) == 10
    npy_answer = client.post(
        "/encode", json={"vectors": sample_rows.tolist()}, headers={"accept": NPY}
    )
    assert npy_answer.headers["content-type"] == NPY
    assert _load(npy_answer.content).dtype == np.float64
    np.testing.assert_array_equal(
        _load(npy_answer.content).astype(np.float32),
        np.array(json_answer.json()["latent"], dtype=np.float32),
    )
    # without Accept, the answer comes in the request's format
    assert _post(client, "/encode", _npy(sample_rows), accept=None).headers["content-type"] == NPY


def test_big_endian_and_fortran_order_are_read_correctly(client, sample_rows):
    plain = _load(_post(client, "/encode", _npy(sample_rows)).content)
    big = _load(_post(client, "/encode", _npy(sample_rows.astype(">f8"))).content)
    fortran = _load(_post(client, "/encode", _npy(np.asfortranarray(sample_rows))).content)
    np.testing.assert_array_equal(big, plain)
    np.testing.assert_array_equal(fortran, plain)


def _with_value(row: int, col: int, value: float) -> np.ndarray:
    X = np.ones((4, 64))
    X[row, col] = value
    return X


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _header_version_3(array: np.ndarray) -> bytes:
    body = bytearray(_npy(array))
    body[6] = 3  # claim format 3.0
    return bytes(body)


BAD = [
    (b"not an npy file", ["body"], "must start with the bytes"),
    (b"", ["body"], "must start with the bytes"),
    (
        _npy(np.array([_Exploit()] * 2, dtype=object), allow_pickle=True),
        ["body"],
        "Object (pickled)",
    ),
    (_npy(np.ones((2, 64), dtype=np.int64)), ["body"], "float32 or float64, got <i8"),
    (_npy(np.ones((2, 64), dtype=np.float16)), ["body"], "float32 or float64, got <f2"),
    (_npy(np.ones((2, 8, 8))), ["body"], "shape must be (n, 64), got (2, 8, 8)"),
    (_npy(np.ones((2, 63))), ["body"], "shape must be (n, 64), got (2, 63)"),
    (_npy(np.ones(64)), ["body"], "shape must be (n, 64), got (64,)"),
    (_npy(np.ones((0, 64))), ["body"], "no rows"),
    (_npy(np.ones((3, 64)))[:-8], ["body"], "Array data is 1528 bytes, expected 1536"),
    (_npy(np.ones((3, 64))) + b"extra", ["body"], "Array data is 1541 bytes, expected 1536"),
    (_npy(_with_value(2, 5, np.nan)), ["body", 2, 5], "Value nan is not finite"),
    (_npy(_with_value(1, 0, np.inf)), ["body", 1, 0], "is not finite"),
    (_npy(_with_value(3, 63, 16.01)), ["body", 3, 63], "is outside [0, 16]"),
    (_npy(_with_value(0, 1, -1)), ["body", 0, 1], "is outside [0, 16]"),
    (_header_version_3(np.ones((2, 64))), ["body"], "Invalid .npy header"),
    (b"\x93NUMPY\x01\x00\xff\x7f" + b" " * 40, ["body"], "Invalid .npy header"),
    (_npy(np.zeros(2, dtype=[("a", "<f8"), ("b", "<f8")])), ["body"], "float32 or float64"),
]


@pytest.mark.parametrize(("body", "loc", "fragment"), BAD)
def test_bad_npy_is_refused_with_reason(client, body, loc, fragment, capsys):
    response = _post(client, "/encode", body)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc
    assert fragment in detail["msg"], detail
    assert "unpickled!" not in capsys.readouterr().out
    assert client.get("/readyz").status_code == 200


def test_pickle_file_is_not_npy(client):
    response = _post(client, "/encode", pickle.dumps(np.ones((2, 64))))
    assert response.status_code == 422
    assert "must start with the bytes" in response.json()["detail"][0]["msg"]


def test_too_many_npy_rows(client, settings):
    response = _post(client, "/encode", _npy(np.ones((settings.max_batch + 1, 64))))
    assert response.status_code == 413
    assert f"exceeds the limit of {settings.max_batch}" in response.json()["detail"][0]["msg"]


def test_decode_npy_range(client):
    response = _post(client, "/decode", _npy(np.array([[0.0, 2e6]])))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", 0, 1]


def test_openapi_documents_npy(client):
    op = client.get("/openapi.json").json()["paths"]["/encode"]["post"]
    assert op["requestBody"]["content"][NPY]["schema"] == {"type": "string", "format": "binary"}
    assert NPY in op["responses"]["200"]["content"]
    assert "application/json" in op["responses"]["200"]["content"]
