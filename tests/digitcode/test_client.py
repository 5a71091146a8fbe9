"""The client library against the real app, in-process (no sockets)."""

import httpx
import numpy as np
import pytest

from digitcode import APIError, AsyncClient, Client, ClientError, ServerError, TransportError
from tests.conftest import assert_same_in_model_precision


@pytest.fixture
def rows(sample_rows):
    # 95 rows: more than two batches of 40 (the app's max batch), not a multiple of it.
    return np.vstack([sample_rows] * 9 + [sample_rows[:5]])


def test_encode_splits_batches_and_joins_answers(sync_transport, default_model, rows):
    calls = []
    with Client("http://test", transport=sync_transport, batch_size=40) as c:
        Z = c.encode(rows, progress=calls.append)
    assert Z.shape == (95, 2)
    assert calls == [40, 40, 15]
    assert_same_in_model_precision(Z, default_model.encode(rows))


def test_decode_and_reconstruct(sync_transport, default_model, rows):
    with Client("http://test", transport=sync_transport, batch_size=40) as c:
        X = c.decode(default_model.encode(rows))
        X_hat, errors = c.reconstruct(rows)
    expected_X, expected_err = default_model.reconstruct(rows)
    assert X.shape == (95, 64) and X_hat.shape == (95, 64) and errors.shape == (95,)
    assert_same_in_model_precision(X, expected_X)
    assert_same_in_model_precision(X_hat, expected_X)
    assert_same_in_model_precision(errors, expected_err)


def test_single_vector_and_model_info(sync_transport, default_model, sample_rows):
    with Client("http://test", transport=sync_transport) as c:
        Z = c.encode(sample_rows[0])
        info = c.model_info()
        assert c.ready()
    assert Z.shape == (1, 2)
    assert info["model_version"] == default_model.version


def test_batch_larger_than_server_limit_is_a_client_error(sync_transport, rows):
    with (
        Client("http://test", transport=sync_transport, batch_size=80) as c,
        pytest.raises(ClientError) as info,
    ):
        c.encode(rows)
    assert info.value.status_code == 413
    assert "exceeds the limit of 40" in str(info.value)


def test_invalid_values_name_row_and_column(sync_transport, sample_rows):
    bad = sample_rows.copy()
    bad[3, 17] = 99
    with Client("http://test", transport=sync_transport) as c, pytest.raises(ClientError) as info:
        c.encode(bad)
    assert info.value.status_code == 422
    assert str(info.value).startswith("HTTP 422: vectors[3][17]: Value 99.0 is outside [0, 16]")


def test_wrong_shape_is_refused_before_sending(sync_transport):
    with (
        Client("http://test", transport=sync_transport) as c,
        pytest.raises(ValueError, match=r"shape \(n, 64\), got \(2, 3\)"),
    ):
        c.encode(np.zeros((2, 3)))


def test_server_error_maps_to_server_error():
    transport = httpx.MockTransport(
        lambda r: httpx.Response(503, json={"detail": "Model not loaded yet"})
    )
    with Client("http://test", transport=transport) as c:
        with pytest.raises(ServerError, match="HTTP 503: Model not loaded yet") as info:
            c.encode(np.zeros((1, 64)))
        assert isinstance(info.value, APIError) and info.value.status_code == 503
        assert not c.ready()


def test_non_json_error_body_is_kept():
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="Bad Gateway"))
    with (
        Client("http://test", transport=transport) as c,
        pytest.raises(ServerError, match="HTTP 502: Bad Gateway"),
    ):
        c.decode(np.zeros((1, 2)))


def test_connection_error_is_a_transport_error():
    def refuse(request):
        raise httpx.ConnectError("Connection refused", request=request)

    with (
        Client("http://test", transport=httpx.MockTransport(refuse)) as c,
        pytest.raises(TransportError, match=r"POST http://test/encode: Connection refused"),
    ):
        c.encode(np.zeros((1, 64)))


def test_api_key_is_sent():
    seen = {}

    def handler(request):
        seen["key"] = request.headers.get("x-api-key")
        return httpx.Response(200, json={"latent": [[0.0, 0.0]]})

    with Client("http://test", transport=httpx.MockTransport(handler), api_key="s3cret") as c:
        c.encode(np.zeros((1, 64)))
    assert seen["key"] == "s3cret"


def test_empty_input_sends_nothing():
    def handler(request):
        raise AssertionError("no request expected")

    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        assert c.encode(np.zeros((0, 64))).shape == (0, 2)


@pytest.mark.anyio
async def test_async_client_matches_model(async_transport, default_model, rows):
    async with AsyncClient("http://test", transport=async_transport, batch_size=40) as c:
        Z = await c.encode(rows)
        X = await c.decode(Z)
        X_hat, errors = await c.reconstruct(rows)
        info = await c.model_info()
        ready = await c.ready()
    assert_same_in_model_precision(Z, default_model.encode(rows))
    assert_same_in_model_precision(X, X_hat.astype(default_model.dtype))
    assert errors.shape == (95,)
    assert info["model_version"] == default_model.version and ready


@pytest.mark.anyio
async def test_async_client_errors(async_transport):
    async with AsyncClient("http://test", transport=async_transport) as c:
        with pytest.raises(
            ClientError,
            match=r"HTTP 422: latent\[0\]\[1\]: Value 1e\+300 is outside \[-1e\+06, 1e\+06\]",
        ):
            await c.decode(np.array([[0.0, 1e300]]))


@pytest.mark.anyio
async def test_async_connection_error():
    def refuse(request):
        raise httpx.ConnectError("Connection refused", request=request)

    async with AsyncClient("http://test", transport=httpx.MockTransport(refuse)) as c:
        with pytest.raises(TransportError, match="Connection refused"):
            await c.encode(np.zeros((1, 64)))
        assert not await c.ready()


class _Recorder(httpx.BaseTransport):
    """Passes requests on and remembers their content types."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.content_types: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.content_types.append(request.headers.get("content-type", ""))
        return self.inner.handle_request(request)


def test_large_batches_travel_as_npy(sync_transport, default_model, rows):
    recorder = _Recorder(sync_transport)
    with Client("http://test", transport=recorder, batch_size=40, binary_from=30) as c:
        Z = c.encode(rows)
        X_hat, errors = c.reconstruct(rows)
        X = c.decode(Z)
    # 40, 40 and 15 rows per call: the first two as .npy, the last as JSON (three endpoints)
    assert recorder.content_types == (["application/x-npy"] * 2 + ["application/json"]) * 3
    expected_X, expected_err = default_model.reconstruct(rows)
    assert_same_in_model_precision(Z, default_model.encode(rows))
    assert_same_in_model_precision(X_hat, expected_X)
    assert_same_in_model_precision(errors, expected_err)
    assert_same_in_model_precision(X, default_model.decode(Z))


def test_binary_can_be_switched_off(sync_transport, rows):
    recorder = _Recorder(sync_transport)
    with Client("http://test", transport=recorder, batch_size=40, binary_from=None) as c:
        c.encode(rows)
    assert set(recorder.content_types) == {"application/json"}


@pytest.mark.anyio
async def test_async_binary_path(async_transport, default_model, rows):
    async with AsyncClient(
        "http://test", transport=async_transport, batch_size=40, binary_from=1
    ) as c:
        X_hat, errors = await c.reconstruct(rows)
    expected_X, expected_err = default_model.reconstruct(rows)
    assert_same_in_model_precision(X_hat, expected_X)
    assert_same_in_model_precision(errors, expected_err)


@pytest.mark.parametrize("binary_from", [None, 1], ids=["json", "npy"])
def test_errors_name_the_row_of_the_whole_input(sync_transport, rows, binary_from):
    bad = rows.copy()
    bad[87, 7] = 99  # in the third batch of 40, at row 7 of that batch
    with (
        Client(
            "http://test", transport=sync_transport, batch_size=40, binary_from=binary_from
        ) as c,
        pytest.raises(ClientError) as info,
    ):
        c.encode(bad)
    (item,) = info.value.detail
    assert 87 in item["loc"] and 7 in item["loc"]
    assert "[87][7]" in str(info.value)
    # The service's words, unchanged (rows 0..16 plus one 99: the 8-bit hint applies too).
    assert item["msg"].startswith("Value 99.0 is outside [0, 16]: these look like 8-bit")


def test_long_error_lists_are_summarised():
    detail = [{"loc": ["body", "vectors", 0, i], "msg": "bad", "type": "x"} for i in range(20)]
    transport = httpx.MockTransport(lambda r: httpx.Response(422, json={"detail": detail}))
    with Client("http://test", transport=transport) as c, pytest.raises(ClientError) as info:
        c.encode(np.zeros((1, 64)))
    assert str(info.value).endswith("vectors[0][2]: bad; and 17 more")
