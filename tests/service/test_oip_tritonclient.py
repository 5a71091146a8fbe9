"""A real Open Inference Protocol client, ``tritonclient[http]``, against ``python -m service``.

With its default settings (binary tensors in and out, no Content-Type) and in JSON mode, it
gets the same numbers as the native ``/encode``, ``/decode`` and ``/reconstruct`` for the same
rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import running_service, synthetic_digits

pytestmark = pytest.mark.slow  # a server subprocess


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_service({"DIGITCODE_WORKERS": "1", "DIGITCODE_LOG_LEVEL": "warning"}) as (
        _,
        url,
    ):
        yield url


@pytest.fixture(scope="module")
def native(server: str) -> dict[str, np.ndarray]:
    """The native API's answers for 25 rows and their codes, as float32."""
    X = synthetic_digits(25, seed=3)[0]
    with httpx.Client(base_url=server) as c:
        latent = c.post("/encode", json={"vectors": X.tolist()}).json()["latent"]
        rec = c.post("/reconstruct", json={"vectors": X.tolist()}).json()
        decoded = c.post("/decode", json={"latent": latent}).json()["vectors"]
    f32 = np.float32
    return {
        "X": X,
        "latent": np.asarray(latent, f32),
        "reconstruction": np.asarray(rec["vectors"], f32),
        "error": np.asarray(rec["errors"], f32),
        "decoded": np.asarray(decoded, f32),
    }


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield c
    c.close()


def test_health_and_metadata_through_the_client(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digitcode") and client.is_model_ready("digitcode-decoder")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("digitcode")
    names = [o["name"] for o in meta["outputs"]]
    assert names == ["latent", "reconstruction", "error", "distance", "is_outlier", "feature_score"]
    assert meta["outputs"][4]["datatype"] == "BOOL"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_autoencoder_gives_the_native_numbers(client, native, binary):
    vectors = triton.InferInput("vectors", [25, 64], "FP32")
    vectors.set_data_from_numpy(native["X"].astype(np.float32), binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("latent", "reconstruction", "error")
    ]
    result = client.infer("digitcode", [vectors], outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    for name in ("latent", "reconstruction", "error"):
        got = result.as_numpy(name)
        assert got is not None and got.dtype == np.float32
        np.testing.assert_array_equal(got, native[name], err_msg=name)


def test_default_settings_return_every_output_binary(client, native):
    vectors = triton.InferInput("vectors", [25, 64], "FP32")
    vectors.set_data_from_numpy(native["X"].astype(np.float32))  # binary_data=True by default
    result = client.infer("digitcode", [vectors])  # no outputs named: all, binary
    response = result.get_response()
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    np.testing.assert_array_equal(result.as_numpy("latent"), native["latent"])
    # The outlier flags as BOOL, one byte each, read by the client as numpy booleans.
    flags = result.as_numpy("is_outlier")
    threshold = np.float32(response["parameters"]["outlier_threshold"])
    distance_threshold = np.float32(response["parameters"]["distance_threshold"])
    distances = result.as_numpy("distance")
    assert flags is not None and flags.dtype == np.bool_ and distances is not None
    expected = (native["error"] > threshold) | (distances > distance_threshold)
    assert flags.tolist() == expected.tolist()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_decoder_gives_the_native_numbers(client, native, binary):
    latent = triton.InferInput("latent", [25, 2], "FP32")
    latent.set_data_from_numpy(native["latent"], binary_data=binary)
    out = triton.InferRequestedOutput("vectors", binary_data=binary)
    result = client.infer("digitcode-decoder", [latent], outputs=[out])
    np.testing.assert_array_equal(result.as_numpy("vectors"), native["decoded"])


def test_fp64_in_fp64_out(client, native):
    vectors = triton.InferInput("vectors", [25, 64], "FP64")
    vectors.set_data_from_numpy(native["X"].astype(np.float64))
    result = client.infer("digitcode", [vectors], outputs=[triton.InferRequestedOutput("latent")])
    got = result.as_numpy("latent")
    assert got is not None and got.dtype == np.float64
    np.testing.assert_array_equal(got.astype(np.float32), native["latent"])


def test_errors_reach_the_client_with_their_message(client):
    bad = triton.InferInput("vectors", [1, 64], "FP32")
    bad.set_data_from_numpy(np.full((1, 64), 99, dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"Value 99.0 is outside \[0, 16\]"):
        client.infer("digitcode", [bad])
    with pytest.raises(InferenceServerException, match="Unknown model 'nope'"):
        client.infer("nope", [bad])
