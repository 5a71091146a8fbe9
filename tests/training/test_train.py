import json
import re

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
    # Both are outside the current directory, so they are recorded as given.
    assert f"--train {data_file} --out {trained} " in manifest["rebuild_command"]
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


def _tiny_data():
    from service.model import scale_pixels
    from training.data import fit_minmax

    X, _ = synthetic_digits(120, seed=5)
    lo, scale = fit_minmax(X)
    return scale_pixels(X, lo, scale)


def test_progress_bar_per_seed_counts_epochs_and_shows_train_and_validation_mse(capsys):
    from training.train import Preset, train_autoencoder, train_seeds

    Xs = _tiny_data()
    preset = Preset(hidden_layer_sizes=(6, 2, 6), activation="tanh", epochs=4, n_seeds=2)
    train_seeds(Xs[:100], Xs[100:], preset, seed=11, progress=True)
    bars = capsys.readouterr().err
    for seed in (11, 12):
        last = train_autoencoder(Xs[:100], Xs[100:], preset, seed).history[-1]
        # Epochs of one network, not of both together (8/8), and its latest MSE figures.
        figures = f"MSE train {last.train_mse:.4f} val {last.val_mse:.4f}"
        assert re.search(rf"seed {seed}: 100%\|[^|]*\| 4/4 epochs \[[^\]]*, {figures}\]", bars)
    assert "8/8" not in bars


def test_progress_bar_says_when_a_network_stopped_early(capsys):
    from training.train import Preset, train_seeds

    Xs = _tiny_data()
    preset = Preset(
        hidden_layer_sizes=(6, 2, 6),
        activation="tanh",
        epochs=60,
        patience=2,
        learning_rate_init=0.05,
    )
    result = train_seeds(Xs[:100], Xs[100:], preset, seed=11, progress=True)
    n = len(result.history)
    assert n < 60  # the premise: this network stops early
    last = result.history[-1]
    bar = capsys.readouterr().err
    # Its own count, not n/n or 60/60, and the figures of the epoch it stopped at.
    assert f"seed 11: {n}/60 epochs, stopped early [" in bar
    assert f"MSE train {last.train_mse:.4f} val {last.val_mse:.4f}]" in bar


def test_history_train_and_validation_mse_are_the_served_reconstruction_error():
    from training.train import Preset, train_autoencoder

    Xs = _tiny_data()
    X_train, X_val = Xs[:15], Xs[15:35]  # fewer training rows than validation: all are sampled
    preset = Preset(hidden_layer_sizes=(6, 2, 6), activation="tanh", epochs=5, batch_size=8)
    result = train_autoencoder(X_train, X_val, preset, seed=0)
    best = result.history[result.best_epoch - 1]

    def mse(X):
        return np.mean((np.clip(result.mlp.predict(X), 0.0, 1.0) - X) ** 2)

    assert best.train_mse == pytest.approx(mse(X_train), rel=1e-12)
    assert best.val_mse == pytest.approx(mse(X_val), rel=1e-12)
    assert best.train_loss > 0


def _files(model_dir):
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in sorted(model_dir.iterdir())}


def test_retraining_the_same_model_leaves_the_artifact_untouched(data_file, tmp_path, capsys):
    out = tmp_path / "m"
    args = ("--preset", "seed", "--epochs", "3")
    assert _train(data_file, out, *args) == 0
    # A created_at from the past: a rewrite would stamp the time of the second run.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["created_at"] = "2001-02-03T04:05:06Z"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    before = _files(out)
    capsys.readouterr()
    assert _train(data_file, out, *args) == 0
    assert _files(out) == before  # same bytes, and not even rewritten (same inodes)
    printed = capsys.readouterr().out
    assert f"artifact:                      {out} unchanged (model version " in printed
    assert "created_at 2001-02-03T04:05:06Z" in printed


@pytest.mark.slow
def test_retraining_rewrites_the_artifact_when_the_model_or_its_record_differs(data_file, tmp_path):
    out = tmp_path / "m"
    assert _train(data_file, out, "--preset", "seed", "--epochs", "3") == 0
    first = load_artifact(out).manifest
    assert _train(data_file, out, "--preset", "seed", "--epochs", "3", "--seed", "1") == 0
    other_seed = load_artifact(out).manifest
    assert other_seed["weights_sha256"] != first["weights_sha256"]
    assert other_seed["seed"] == 1
    # Same rows under another name: the same weights, but the manifest records another file.
    renamed = tmp_path / "renamed.tra"
    renamed.write_bytes(data_file.read_bytes())
    assert _train(renamed, out, "--preset", "seed", "--epochs", "3", "--seed", "1") == 0
    again = load_artifact(out).manifest
    assert again["weights_sha256"] == other_seed["weights_sha256"]
    assert again["training"]["data_file"] == "renamed.tra"


def test_rebuild_command_records_paths_that_rebuild_the_same_model(
    data_file, tmp_path, monkeypatch, capsys
):
    import shlex
    import shutil

    first = tmp_path / "first"
    (first / "data").mkdir(parents=True)
    shutil.copy(data_file, first / "data" / "d.tra")
    monkeypatch.chdir(first)
    # Absolute paths inside the current directory are recorded relative to it.
    argv = ["--train", str(first / "data" / "d.tra"), "--out", str(first / "models" / "b")]
    assert main([*argv, "--preset", "seed", "--epochs", "2", "--no-progress"]) == 0
    command = load_artifact(first / "models" / "b").manifest["rebuild_command"]
    assert command == (
        "python -m training.train --train data/d.tra --out models/b --preset seed --seed 0 "
        "--epochs 2"
    )
    assert str(tmp_path) not in command
    # The command, run in a copy of the tree elsewhere, rebuilds the very same artifact.
    second = tmp_path / "elsewhere" / "second"
    shutil.copytree(first, second)
    before = _files(second / "models" / "b")
    monkeypatch.chdir(second)
    capsys.readouterr()
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "training.train"]
    assert main([*words[3:], "--no-progress"]) == 0
    assert "models/b unchanged (model version " in capsys.readouterr().out
    assert _files(second / "models" / "b") == before


def test_rebuild_command_keeps_an_output_outside_the_current_directory_as_given(
    data_file, tmp_path, monkeypatch
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "x" / "model_b"
    assert _train(data_file, out, "--preset", "seed", "--epochs", "2") == 0
    command = load_artifact(out).manifest["rebuild_command"]
    assert f" --out {out} " in command  # not "--out model_b", which is another directory
