"""/encode, /decode, /reconstruct answers on valid input, against the in-process model."""

import re

import numpy as np


def test_encode_matches_model(client, default_model, sample_rows):
    response = client.post("/encode", json={"vectors": sample_rows.tolist()})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-model-version"] == default_model.version
    latent = np.array(response.json()["latent"], dtype=default_model.dtype)
    assert latent.shape == (10, 2)
    np.testing.assert_array_equal(latent, default_model.encode(sample_rows))


def test_json_answers_carry_the_models_precision(client, default_model, sample_rows):
    # float32 values printed with the shortest digits that read back as the same float32:
    # at most 9 significant digits instead of float64's 17.
    text = client.post("/reconstruct", json={"vectors": sample_rows.tolist()}).text
    numbers = re.findall(r"-?\d[\d.]*(?:e-?\d+)?", text)
    assert len(numbers) == 10 * 65
    digits = [len(re.sub(r"e.*|[-.]", "", n).lstrip("0")) for n in numbers]
    assert max(digits) <= 9
    X_hat, errors = default_model.reconstruct(sample_rows)
    assert sorted(float(n) for n in numbers) == sorted(
        float(str(v)) for v in np.concatenate([X_hat.ravel(), errors])
    )


def test_encode_accepts_integers_and_floats(client, default_model):
    row = [0] * 32 + [16.0] * 16 + [7.5] * 16
    latent = client.post("/encode", json={"vectors": [row]}).json()["latent"]
    expected = default_model.encode(np.array([row], float))
    np.testing.assert_array_equal(np.array(latent, dtype=default_model.dtype), expected)


def test_decode_matches_model_and_is_clipped(client, default_model):
    codes = [[0.0, 0.0], [0.5, -0.5], [3.0, 3.0]]
    response = client.post("/decode", json={"latent": codes})
    assert response.status_code == 200
    vectors = np.array(response.json()["vectors"])
    assert vectors.shape == (3, 64)
    assert vectors.min() >= 0.0 and vectors.max() <= 16.0
    expected = default_model.decode(np.array(codes))
    np.testing.assert_array_equal(vectors.astype(default_model.dtype), expected)


def test_reconstruct_equals_decode_of_encode(client, sample_rows):
    rec = client.post("/reconstruct", json={"vectors": sample_rows.tolist()}).json()
    latent = client.post("/encode", json={"vectors": sample_rows.tolist()}).json()["latent"]
    decoded = client.post("/decode", json={"latent": latent}).json()["vectors"]
    np.testing.assert_allclose(rec["vectors"], decoded, atol=1e-12)
    errors = np.array(rec["errors"])
    assert errors.shape == (10,)
    assert np.all(errors >= 0)


def test_reconstruct_error_flags_a_scribble(client, default_model):
    from tests.conftest import DATA

    path = DATA / "optdigits.tes"
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
