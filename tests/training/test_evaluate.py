import json

import numpy as np
import pytest

from service.model import Autoencoder, scale_pixels
from tests.conftest import synthetic_digits, write_optdigits
from training.evaluate import evaluate_models, main, noise_vectors, parameter_count


@pytest.fixture(scope="module")
def data():
    # The tiny model was fitted on synthetic_digits(200); rows 200.. are unseen "test" rows.
    X, y = synthetic_digits(300)
    return X[:200], y[:200], X[200:], y[200:]


@pytest.fixture(scope="module")
def result(tiny_model_dir, data):
    model = Autoencoder.from_dir(tiny_model_dir)
    X_tr, y_tr, X_te, y_te = data
    res = evaluate_models(
        model, X_tr, y_tr, X_te, y_te, 0.15, 0, seed_model=model, seed_train_seconds=1.5
    )
    return model, res


def test_rows_and_baselines(result, data):
    model, res = result
    X_te = data[2]
    names = [r.name for r in res["rows"]]
    assert names[:3] == ["mean only", "PCA-2", "PCA-5"]
    assert names[3] == "seed preset (64-2-64 sigmoid)"
    art = model.artifact
    S_te = scale_pixels(X_te, art.scaler_min, art.scaler_scale)
    mean_row = res["rows"][0]
    # the mean-only baseline is the per-pixel mean of the training split, scored on test rows
    assert 0 < mean_row.test_mse < np.mean((S_te - S_te.mean(axis=0) - 0.5) ** 2)
    assert mean_row.knn_accuracy is None
    pca2, pca5 = res["rows"][1], res["rows"][2]
    assert pca5.test_mse < pca2.test_mse < mean_row.test_mse
    assert (pca2.knn_dims, pca5.knn_dims) == (2, 5)
    assert pca5.knn_accuracy == pytest.approx(1.0)  # ten well-separated prototypes
    last = res["rows"][-1]
    _, errors = model.reconstruct(X_te)
    assert last.test_mse == pytest.approx(errors.mean())
    assert (
        last.parameters
        == parameter_count(model)
        == 64 * 8 + 8 + 8 * 2 + 2 + 2 * 8 + 8 + 8 * 64 + 64
    )
    assert res["rows"][3].train_seconds == 1.5


def test_per_digit_and_anomaly_score(result, data):
    model, res = result
    y_te = data[3]
    assert sorted(res["per_digit"]) == list(range(10))
    counts = np.bincount(y_te, minlength=10)
    weighted = sum(res["per_digit"][d] * counts[d] for d in range(10)) / counts.sum()
    assert weighted == pytest.approx(res["test_errors"].mean())
    assert res["test_errors"].shape == res["noise_errors"].shape == (100,)
    # AUC = chance that a noise vector scores above a test digit
    digits, noise = res["test_errors"][:, None], res["noise_errors"][None, :]
    assert res["auc"] == pytest.approx(np.mean(noise > digits) + 0.5 * np.mean(noise == digits))
    assert res["homework_sse"] == pytest.approx(model.reconstruct(data[0])[1].sum() * 32)


def test_noise_vectors_are_valid_pixels():
    noise = noise_vectors(50, seed=3)
    assert noise.shape == (50, 64)
    assert noise.min() >= 0 and noise.max() <= 16
    np.testing.assert_array_equal(noise, np.round(noise))


@pytest.mark.slow  # trains nothing, but draws four figures: about 3 s
def test_command_writes_report_and_figures(tmp_path, tiny_model_dir, data, capsys):
    X_tr, y_tr, X_te, y_te = data
    train = write_optdigits(tmp_path / "s.tra", X_tr, y_tr)
    test = write_optdigits(tmp_path / "s.tes", X_te, y_te)
    out = tmp_path / "report"
    argv = ["--model", str(tiny_model_dir), "--train", str(train), "--test", str(test)]
    argv += ["--seed-model", str(tiny_model_dir), "--novelty-preset", "seed"]
    assert main([*argv, "--novelty-epochs", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| PCA-2 |" in printed and "anomaly AUC" in printed
    report = (out / "README.md").read_text()
    assert "## Headline" in report and "validation MSE" in report
    for name in ("latent_test.png", "reconstructions.png", "per_digit.png", "anomaly.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in report
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in metrics["rows"]][:3] == ["mean only", "PCA-2", "PCA-5"]
    assert f"anomaly AUC (test digits vs noise): {metrics['anomaly_auc']:.4f}" in printed
    # The outlier evaluation: every detector on every set, novelty for each digit left out.
    outliers = metrics["outliers"]
    detectors = [
        "served: error or distance",
        "autoencoder error alone",
        "prototype distance alone",
        "PCA-2 error",
        "PCA-5 error",
        "IsolationForest",
        "LOF (novelty)",
        "5th-nearest training digit",
    ]
    assert list(outliers["false_positives"]) == detectors
    assert list(outliers["novelty"]) == detectors
    assert "rotated 90°" in outliers["sets"] and "uniform noise" in outliers["sets"]
    for by_detector in outliers["sets"].values():
        assert list(by_detector) == detectors
        assert all(0 <= r["auc"] <= 1 and 0 <= r["detected"] <= 1 for r in by_detector.values())
    # The same test digits and noise as the headline's anomaly AUC: the same figure.
    assert (
        outliers["sets"]["uniform noise"]["autoencoder error alone"]["auc"]
        == metrics["anomaly_auc"]
    )
    assert "## Outliers" in report and "**Where a baseline wins**" in report


def test_command_refuses_missing_files(tmp_path, tiny_model_dir, capsys):
    argv = ["--model", str(tiny_model_dir), "--train", str(tmp_path / "a"), "--test", "b"]
    assert main(argv) == 2
    assert "file not found" in capsys.readouterr().err
