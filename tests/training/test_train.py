import json

import numpy as np
import pytest

from service.artifact import WEIGHTS_FILE, load_artifact
from service.model import Autoencoder
from tests.conftest import synthetic_digits, write_optdigits
from training.train import PRESETS, main


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    X, y = synthetic_digits(300, seed=3)
    return write_optdigits(tmp_path_factory.mktemp("data") / "synthetic.tra", X, y)


def _train(data_file, out, *extra):
    return main(["--train", str(data_file), "--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    assert _train(data_file, out, "--epochs", "15", "--seed", "7") == 0
    return out


def test_writes_a_loadable_artifact_with_metadata(trained, data_file):
    artifact = load_artifact(trained)
    manifest = artifact.manifest
    assert artifact.layer_sizes == [64, *PRESETS["default"].hidden_layer_sizes, 64]
    assert artifact.activation == "tanh"
    assert manifest["preset"] == "default" and manifest["seed"] == 7
    training = manifest["training"]
    assert training["data_file"] == "synthetic.tra"
    assert training["rows_total"] == 300
    assert training["rows_validation"] == 45 and training["rows_train"] == 255
    assert 1 <= training["best_epoch"] <= training["epochs_run"] <= 15
    assert manifest["metrics"]["validation_mse"] > 0
    assert (
        "--seed 7" in manifest["rebuild_command"] and "--epochs 15" in manifest["rebuild_command"]
    )
    assert str(data_file.parent) not in json.dumps(manifest)  # no machine paths
    assert (trained / "latent.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validation_mse_matches_the_served_model(trained, data_file):
    from sklearn.model_selection import train_test_split

    from training.data import load_optdigits

    X, y = load_optdigits(data_file)
    _, X_val = train_test_split(X, test_size=0.15, stratify=y, shuffle=True, random_state=7)
    _, errors = Autoencoder.from_dir(trained).reconstruct(X_val)
    manifest = load_artifact(trained).manifest
    assert np.mean(errors) == pytest.approx(manifest["metrics"]["validation_mse"], rel=1e-9)


def test_same_seed_same_weights(trained, data_file, tmp_path):
    assert _train(data_file, tmp_path / "again", "--epochs", "15", "--seed", "7") == 0
    assert (tmp_path / "again" / WEIGHTS_FILE).read_bytes() == (trained / WEIGHTS_FILE).read_bytes()


def test_other_seed_other_weights(trained, data_file, tmp_path):
    assert _train(data_file, tmp_path / "other", "--epochs", "15", "--seed", "8") == 0
    assert load_artifact(tmp_path / "other").model_version != load_artifact(trained).model_version


def test_seed_preset_is_the_64_2_64_sigmoid_net(data_file, tmp_path):
    assert _train(data_file, tmp_path / "seed", "--preset", "seed", "--epochs", "5") == 0
    artifact = load_artifact(tmp_path / "seed")
    assert artifact.layer_sizes == [64, 2, 64]
    assert artifact.activation == "logistic"
    assert artifact.latent_layer == 1


def test_prints_summary(data_file, tmp_path, capsys):
    assert _train(data_file, tmp_path / "m", "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert "validation MSE (scaled units):" in out
    assert "PCA-2 validation MSE:" in out
    assert "training time:" in out
    assert f"artifact:                      {tmp_path / 'm'}" in out


def test_bad_arguments_exit_2(data_file, tmp_path, capsys):
    assert _train(tmp_path / "absent.tra", tmp_path / "m") == 2
    assert "absent.tra: file not found" in capsys.readouterr().err
    assert _train(data_file, tmp_path / "m", "--epochs", "0") == 2
    assert not (tmp_path / "m").exists()


def test_best_of_parallel_seeds_is_kept():
    from service.model import scale_pixels
    from training.data import fit_minmax
    from training.train import Preset, train_autoencoder, train_seeds

    X, _ = synthetic_digits(120, seed=5)
    lo, scale = fit_minmax(X)
    Xs = scale_pixels(X, lo, scale)
    preset = Preset(hidden_layer_sizes=(6, 2, 6), activation="tanh", epochs=4, n_seeds=2)
    best = train_seeds(Xs[:100], Xs[100:], preset, seed=11, progress=False)
    singles = [train_autoencoder(Xs[:100], Xs[100:], preset, s) for s in (11, 12)]
    expected = min(singles, key=lambda r: r.best_val_mse)
    assert best.seed == expected.seed
    assert best.best_val_mse == expected.best_val_mse
    for got, want in zip(best.mlp.coefs_, expected.mlp.coefs_, strict=True):
        np.testing.assert_array_equal(got, want)


def test_learning_rate_decays_to_the_final_fraction():
    from training.train import Preset, train_autoencoder

    X, _ = synthetic_digits(60, seed=2)
    Xs = X / 16
    preset = Preset(hidden_layer_sizes=(2,), activation="tanh", epochs=5, lr_decay=0.1)
    result = train_autoencoder(Xs[:50], Xs[50:], preset, seed=0)
    assert result.mlp._optimizer.learning_rate_init == pytest.approx(1e-4)


def test_input_noise_changes_training_but_stays_deterministic():
    from training.train import Preset, train_autoencoder

    X, _ = synthetic_digits(80, seed=4)
    Xs = X / 16
    clean = Preset(hidden_layer_sizes=(4, 2, 4), activation="tanh", epochs=3)
    noisy = Preset(hidden_layer_sizes=(4, 2, 4), activation="tanh", epochs=3, input_noise=0.2)
    a = train_autoencoder(Xs[:60], Xs[60:], noisy, seed=0)
    b = train_autoencoder(Xs[:60], Xs[60:], noisy, seed=0)
    c = train_autoencoder(Xs[:60], Xs[60:], clean, seed=0)
    np.testing.assert_array_equal(a.mlp.coefs_[0], b.mlp.coefs_[0])
    assert not np.array_equal(a.mlp.coefs_[0], c.mlp.coefs_[0])
