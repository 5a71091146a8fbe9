"""/encode, /decode, /reconstruct answers on valid input, against the in-process model."""

import numpy as np
import pytest


def test_encode_matches_model(client, default_model, sample_rows):
    response = client.post("/encode", json={"vectors": sample_rows.tolist()})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-model-version"] == default_model.version
    latent = np.array(response.json()["latent"])
    assert latent.shape == (10, 2)
    np.testing.assert_allclose(latent, default_model.encode(sample_rows), rtol=0, atol=1e-12)


def test_encode_accepts_integers_and_floats(client, default_model):
    row = [0] * 32 + [16.0] * 16 + [7.5] * 16
    latent = client.post("/encode", json={"vectors": [row]}).json()["latent"]
    np.testing.assert_allclose(latent, default_model.encode(np.array([row], float)), atol=1e-12)


def test_decode_matches_model_and_is_clipped(client, default_model):
    codes = [[0.0, 0.0], [0.5, -0.5], [3.0, 3.0]]
    response = client.post("/decode", json={"latent": codes})
    assert response.status_code == 200
    vectors = np.array(response.json()["vectors"])
    assert vectors.shape == (3, 64)
    assert vectors.min() >= 0.0 and vectors.max() <= 16.0
    np.testing.assert_allclose(vectors, default_model.decode(np.array(codes)), atol=1e-12)


def test_reconstruct_equals_decode_of_encode(client, sample_rows):
    rec = client.post("/reconstruct", json={"vectors": sample_rows.tolist()}).json()
    latent = client.post("/encode", json={"vectors": sample_rows.tolist()}).json()["latent"]
    decoded = client.post("/decode", json={"latent": latent}).json()["vectors"]
    np.testing.assert_allclose(rec["vectors"], decoded, atol=1e-12)
    errors = np.array(rec["errors"])
    assert errors.shape == (10,)
    assert np.all(errors >= 0)


def test_reconstruct_error_flags_a_scribble(client, default_model):
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "optdigits.tes"
    if not path.exists():
        pytest.skip(f"{path} not present")
    digit = np.loadtxt(path, delimiter=",", max_rows=1)[:64]
    scribble = np.zeros(64)
    scribble[::3] = 16  # stripes: nothing like a digit
    errors = client.post("/reconstruct", json={"vectors": [digit.tolist(), scribble.tolist()]})
    digit_err, scribble_err = errors.json()["errors"]
    assert scribble_err > 4 * digit_err


def test_batch_at_the_limit_is_served(client, settings):
    rows = np.full((settings.max_batch, 64), 3.0).tolist()
    response = client.post("/encode", json={"vectors": rows})
    assert response.status_code == 200
    assert len(response.json()["latent"]) == settings.max_batch
