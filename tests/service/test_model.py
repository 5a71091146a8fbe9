from dataclasses import replace

import numpy as np
import pytest
from sklearn.neural_network._base import ACTIVATIONS

import service.model as model_module
from service.artifact import load_artifact
from service.model import Autoencoder, scale_pixels, unscale_pixels
from tests.conftest import DATA
from training.data import load_optdigits


def _sklearn_hidden(mlp, Xs: np.ndarray, layer: int) -> np.ndarray:
    """Hidden activation ``layer`` (1-based into layer_sizes) using scikit-learn's own functions."""
    h = Xs
    for W, b in zip(mlp.coefs_[:layer], mlp.intercepts_[:layer], strict=True):
        h = h @ W + b
        ACTIVATIONS[mlp.activation](h)  # in place, as scikit-learn applies it
    return h


@pytest.fixture(scope="module")
def tiny(tiny_mlp, tiny_model_dir):
    return Autoencoder.from_dir(tiny_model_dir)


# Fewer rows than _FOLD_ROWS take tanh as it is, more the form folded into the weights.
FEW_AND_MANY = pytest.mark.parametrize("rows", [5, 200])


@FEW_AND_MANY
def test_reconstruction_equals_sklearn_predict(tiny, tiny_mlp, rows):
    mlp, lo, scale, X = tiny_mlp
    X = X[:rows]
    Xs = scale_pixels(X, lo, scale)
    X_hat, errors = tiny.reconstruct(X)
    expected = mlp.predict(Xs)
    np.testing.assert_allclose(
        tiny._network_output(tiny._encode_clipped(tiny._clip(X))), expected, atol=1e-9
    )
    clipped = np.clip(expected, 0, 1)
    np.testing.assert_allclose(X_hat, unscale_pixels(clipped, lo, scale), atol=1e-9)
    np.testing.assert_allclose(errors, np.mean((clipped - Xs) ** 2, axis=1), atol=1e-9)


@FEW_AND_MANY
def test_latent_equals_sklearn_hidden_activation(tiny, tiny_mlp, rows):
    mlp, lo, scale, X = tiny_mlp
    X = X[:rows]
    Z = tiny.encode(X)
    assert Z.shape == (len(X), 2)
    np.testing.assert_allclose(Z, _sklearn_hidden(mlp, scale_pixels(X, lo, scale), 2), atol=1e-9)


def test_pixels_outside_the_training_range_are_clipped_as_scikit_learn_sees_them(tiny, tiny_mlp):
    # The scaler is folded into the first layer; clipping then happens on raw pixels. Random
    # pixels in [0, 16] fall outside the training range of the synthetic digits' pixels.
    mlp, lo, scale, _ = tiny_mlp
    X = np.random.default_rng(1).integers(0, 17, size=(50, 64)).astype(np.float64)
    Xs = scale_pixels(X, lo, scale)
    assert np.any((X - lo) * scale > 1)  # so the clipping is exercised
    np.testing.assert_allclose(tiny.encode(X), _sklearn_hidden(mlp, Xs, 2), atol=1e-9)
    X_hat, errors = tiny.reconstruct(X)
    clipped = np.clip(mlp.predict(Xs), 0, 1)
    np.testing.assert_allclose(errors, np.mean((clipped - Xs) ** 2, axis=1), atol=1e-9)
    np.testing.assert_allclose(X_hat, unscale_pixels(clipped, lo, scale), atol=1e-9)


@pytest.mark.parametrize("rows", [5, 100])
def test_logistic_preset_matches_sklearn(tmp_path, rows):
    from sklearn.neural_network import MLPRegressor

    from service.artifact import save_artifact
    from tests.conftest import synthetic_digits
    from training.data import fit_minmax
    from training.train import mlp_to_artifact

    X, y = synthetic_digits(100)
    lo, scale = fit_minmax(X)
    Xs = scale_pixels(X, lo, scale)
    mlp = MLPRegressor(hidden_layer_sizes=(2,), activation="logistic", max_iter=20, random_state=1)
    mlp.fit(Xs, Xs)
    save_artifact(tmp_path / "seed", mlp_to_artifact(mlp, lo, scale, {}, X, X, y))
    model = Autoencoder.from_dir(tmp_path / "seed")
    X, Xs = X[:rows], Xs[:rows]
    np.testing.assert_allclose(
        model._network_output(model._encode_clipped(model._clip(X))), mlp.predict(Xs), atol=1e-9
    )
    np.testing.assert_allclose(model.encode(X), _sklearn_hidden(mlp, Xs, 1), atol=1e-9)


def test_many_rows_agree_with_few_to_float32_rounding(default_model, sample_rows):
    # The folded activations (many rows) against np.tanh (each row alone), float32 model.
    X = np.tile(sample_rows, (4, 1))[:64]
    alone = [default_model.forward(x[None], distances=False) for x in X]
    many = default_model.forward(X, distances=False)
    np.testing.assert_allclose(many.latent, np.vstack([f.latent for f in alone]), atol=2e-6)
    np.testing.assert_allclose(
        many.reconstruction, np.vstack([f.reconstruction for f in alone]), atol=2e-4
    )
    np.testing.assert_allclose(many.errors, np.concatenate([f.errors for f in alone]), atol=5e-7)


def test_many_rows_are_computed_in_blocks_as_in_one_pass(default_model, monkeypatch):
    # 3823 rows: three whole blocks of 1024 and a part of one, against one pass over all.
    X = load_optdigits(DATA / "optdigits.tra")[0]
    blocked = default_model.forward(X)
    Z = default_model.encode(X)
    decoded = default_model.decode(Z)
    assert default_model.forward(X, distances=False).distances is None
    monkeypatch.setattr(model_module, "_BLOCK_ROWS", len(X))
    whole = default_model.forward(X)
    for name, atol in [
        ("latent", 2e-6),
        ("reconstruction", 2e-4),
        ("errors", 5e-7),
        ("pixel_errors", 2e-5),
        ("distances", 1e-6),
    ]:
        got, expected = getattr(blocked, name), getattr(whole, name)
        assert got.shape == expected.shape and got.dtype == expected.dtype == np.float32, name
        np.testing.assert_allclose(got, expected, atol=atol, err_msg=name)
    np.testing.assert_allclose(Z, default_model.encode(X), atol=2e-6)
    np.testing.assert_allclose(decoded, default_model.decode(Z), atol=2e-4)


def test_absurd_latent_codes_decode_without_overflow(default_model, recwarn):
    # Codes as large as the API allows overflow exp in the folded decoder unless clamped.
    extreme = np.array([[1e6, -1e6], [-1e6, 1e6], [1e6, 1e6], [-1e6, -1e6]])
    Z = np.tile(extreme, (10, 1))  # 40 rows: the folded form
    X = default_model.decode(Z)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert np.isfinite(X).all()
    np.testing.assert_allclose(
        X[:4], np.vstack([default_model.decode(z[None]) for z in extreme]), atol=2e-4
    )


def test_decode_of_encode_equals_reconstruct(default_model, sample_rows):
    X_hat, _ = default_model.reconstruct(sample_rows)
    np.testing.assert_array_equal(default_model.decode(default_model.encode(sample_rows)), X_hat)


def test_distances_are_to_the_nearest_prototype_and_flag_outliers(default_model):
    art = default_model.artifact
    assert art.prototypes is not None and art.prototypes.shape == (256, 64)
    digits = load_optdigits(DATA / "optdigits.tes")[0][:10]
    X = np.vstack([digits, [[16.0] * 64], [[0.0, 16.0] * 32]])
    f = default_model.forward(X)
    Xs = scale_pixels(X, art.scaler_min, art.scaler_scale)
    P = art.prototypes.astype(np.float64)
    brute = ((Xs[:, None, :] - P[None]) ** 2).mean(axis=2).min(axis=1)
    np.testing.assert_allclose(f.distances, brute, rtol=1e-4, atol=1e-6)
    # A prototype is at distance 0 from itself (up to float32 rounding).
    P_pixels = P / art.scaler_scale + art.scaler_min
    assert default_model.forward(P_pixels[:3]).distances.max() < 1e-6
    # An outlier: either score above its threshold, and only then.
    flags = default_model.is_outlier(f.errors, f.distances)
    expected = (f.errors > default_model.threshold) | (
        f.distances > default_model.distance_threshold
    )
    np.testing.assert_array_equal(flags, expected)
    assert flags[-2:].all() and flags[:10].sum() <= 2  # real digits: few (~1.7 %)


def test_distances_are_the_same_across_row_blocks(default_model):
    # More rows than one block of the computation (1024), so that the blocks' seams are crossed.
    X = np.random.default_rng(0).integers(0, 17, size=(2500, 64)).astype(np.float64)
    art = default_model.artifact
    assert art.prototypes is not None
    Xs = scale_pixels(X, art.scaler_min, art.scaler_scale)
    brute = np.full(len(X), np.inf)
    for p in art.prototypes.astype(np.float64):
        brute = np.minimum(brute, ((Xs - p) ** 2).mean(axis=1))
    np.testing.assert_allclose(default_model.forward(X).distances, brute, rtol=1e-4, atol=1e-6)


def test_outputs_are_clipped_to_pixel_range(default_model):
    far = np.array([[50.0, -50.0], [-1e6, 1e6]])
    X = default_model.decode(far)
    assert X.shape == (2, 64)
    assert X.min() >= 0.0 and X.max() <= 16.0


def test_scaling_clips_unseen_values_and_survives_constant_pixels(tiny_model_dir):
    artifact = load_artifact(tiny_model_dir)
    X = np.full((1, 64), 16.0)
    Xs = scale_pixels(X, artifact.scaler_min, artifact.scaler_scale)
    assert np.all(np.isfinite(Xs))
    assert Xs.min() >= 0.0 and Xs.max() <= 1.0
    # pixel 0 is constant (0) in the tiny model's training data: scale 1, clipped to 1
    assert artifact.scaler_scale[0] == 1.0
    assert Xs[0, 0] == 1.0


def test_noise_scores_far_above_real_digits(default_model):
    from tests.conftest import DATA

    path = DATA / "optdigits.tes"
    digits = np.loadtxt(path, delimiter=",")[:200, :64]
    noise = np.random.default_rng(0).integers(0, 17, size=(200, 64)).astype(float)
    _, digit_err = default_model.reconstruct(digits)
    _, noise_err = default_model.reconstruct(noise)
    assert np.median(noise_err) > 3 * np.median(digit_err)
    assert np.mean(digit_err) < 0.05


def test_a_float32_model_computes_in_float32(default_model, sample_rows):
    assert default_model.dtype == np.float32  # trained in float32, stored as float32
    Z = default_model.encode(sample_rows)  # float64 in
    X_hat, err = default_model.reconstruct(sample_rows)
    assert Z.dtype == X_hat.dtype == err.dtype == default_model.decode(Z).dtype == np.float32
    for dtype in (np.float32, np.int64):  # any input type gives the same float32 answer
        np.testing.assert_array_equal(default_model.encode(sample_rows.astype(dtype)), Z)
    # float32 differs from a float64 computation with the same weights only by rounding.
    artifact = default_model.artifact
    wide = Autoencoder(
        replace(
            artifact,
            weights=[w.astype(np.float64) for w in artifact.weights],
            biases=[b.astype(np.float64) for b in artifact.biases],
        )
    )
    assert wide.dtype == np.float64
    np.testing.assert_allclose(Z, wide.encode(sample_rows), rtol=1e-5, atol=1e-6)
    X_hat64, err64 = wide.reconstruct(sample_rows)
    assert X_hat64.dtype == np.float64
    np.testing.assert_allclose(X_hat, X_hat64, rtol=1e-5, atol=1e-5)  # pixel units 0..16
    np.testing.assert_allclose(err, err64, rtol=1e-4)


def test_a_float64_model_computes_in_float64(tiny, sample_rows):
    assert tiny.dtype == np.float64
    Z = tiny.encode(sample_rows.astype(np.float32))
    assert Z.dtype == np.float64
    np.testing.assert_array_equal(Z, tiny.encode(sample_rows))
