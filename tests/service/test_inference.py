"""/encode, /decode, /reconstruct answers on valid input, against the in-process model."""

import re

import numpy as np
import pytest


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
    assert len(numbers) == 10 * 66 + 2  # and the two thresholds
    digits = [len(re.sub(r"e.*|[-.]", "", n).lstrip("0")) for n in numbers]
    assert max(digits) <= 9
    f = default_model.forward(sample_rows)
    thresholds = [default_model.threshold, default_model.distance_threshold]
    assert sorted(float(n) for n in numbers) == sorted(
        float(str(v))
        for v in np.concatenate([f.reconstruction.ravel(), f.errors, f.distances, thresholds])
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


def _mixed_rows() -> np.ndarray:
    """Four real test digits and one that is nothing like a digit."""
    from tests.conftest import DATA
    from training.data import load_optdigits

    return np.vstack([load_optdigits(DATA / "optdigits.tes")[0][:4], np.full(64, 16.0)])


def test_reconstruct_flags_outliers_by_the_calibrated_thresholds(client, default_model):
    X = _mixed_rows()
    answer = client.post("/reconstruct", json={"vectors": X.tolist()})
    body = answer.json()
    f = default_model.forward(X)
    assert body["threshold"] == float(str(default_model.threshold))  # float32, shortest digits
    assert body["distance_threshold"] == float(str(default_model.distance_threshold))
    np.testing.assert_array_equal(np.asarray(body["distances"], default_model.dtype), f.distances)
    assert body["is_outlier"] == default_model.is_outlier(f.errors, f.distances).tolist()
    assert body["is_outlier"][4] and not all(body["is_outlier"])
    assert answer.headers["x-outlier-threshold"] == str(default_model.threshold)
    assert "feature_scores" not in body


def test_digits_shifted_down_are_flagged_by_their_distance(client):
    from tests.conftest import DATA
    from training.data import load_optdigits

    X = load_optdigits(DATA / "optdigits.tes")[0][:50].reshape(-1, 8, 8)  # the batch limit
    shifted = np.zeros_like(X)
    shifted[:, 2:] = X[:, :-2]
    body = client.post("/reconstruct", json={"vectors": shifted.reshape(-1, 64).tolist()}).json()
    by_error = np.asarray(body["errors"]) > body["threshold"]
    by_distance = np.asarray(body["distances"]) > body["distance_threshold"]
    assert body["is_outlier"] == (by_error | by_distance).tolist()
    assert sum(body["is_outlier"]) >= 47 and by_error.sum() < 40


def test_feature_scores_on_request_average_to_the_error(client, default_model):
    X = _mixed_rows()
    body = client.post("/reconstruct?feature_scores=true", json={"vectors": X.tolist()}).json()
    scores = np.asarray(body["feature_scores"], dtype=default_model.dtype)
    assert scores.shape == (5, 64) and scores.min() >= 0
    np.testing.assert_allclose(scores.mean(axis=1), body["errors"], rtol=1e-6)
    assert np.argmax(scores[4]) != np.argmin(scores[4])  # they say where
    bad = client.post("/reconstruct?feature_scores=yes", json={"vectors": X.tolist()})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "feature_scores"]


def _npy(X: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, X.astype(np.float32))
    return buffer.getvalue()


def _load(content: bytes) -> np.ndarray:
    import io

    array: np.ndarray = np.load(io.BytesIO(content), allow_pickle=False)
    return array


@pytest.mark.parametrize(
    ("accept", "query", "width", "media"),
    [
        ("application/x-npy", "", 65, "application/x-npy"),  # layout 1: as before
        ("application/x-npy; version=2", "", 66, "application/x-npy; version=2"),
        (
            "application/x-npy; version=2",
            "?feature_scores=true",
            130,
            "application/x-npy; version=2",
        ),
        ("application/x-npy", "?feature_scores=true", 129, "application/x-npy"),
    ],
)
def test_npy_layouts_of_reconstruct(client, default_model, accept, query, width, media):
    X = _mixed_rows()
    answer = client.post(
        "/reconstruct" + query,
        content=_npy(X),
        headers={"Content-Type": "application/x-npy", "Accept": accept},
    )
    assert answer.headers["content-type"] == media
    array = _load(answer.content)
    assert array.shape == (5, width) and array.dtype == np.float32
    X_hat, errors = default_model.reconstruct(X)
    np.testing.assert_array_equal(array[:, :64], X_hat)
    np.testing.assert_array_equal(array[:, 64], errors)
    if width in (66, 130):
        assert array[:, 65].tolist() == (errors > default_model.threshold).tolist()
        assert array[4, 65] == 1 and array[:, 65].min() == 0
    if width > 66:
        np.testing.assert_allclose(array[:, -64:].mean(axis=1), errors, rtol=1e-6)
    assert float(answer.headers["x-outlier-threshold"]) == float(str(default_model.threshold))
