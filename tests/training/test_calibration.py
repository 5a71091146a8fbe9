"""The outlier calibration: its thresholds bound their quantiles, and on the committed model
they keep their promise on writers the calibration never saw (``optdigits.tes``)."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from service.artifact import (
    MANIFEST_FILE,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    _upper_bound_rank,
    _write_npz,
    calibration,
    load_artifact,
    sha256_file,
)
from service.model import Autoencoder
from tests.conftest import DATA, DEFAULT_MODEL
from training.calibrate import main as calibrate_main
from training.data import load_optdigits


@pytest.mark.parametrize(
    ("n", "q", "rank"),
    [
        (574, 0.99, 573),  # the default model's validation split
        (299, 0.99, 299),  # 1 - 0.99**299 = 0.9505: the largest of 299 bounds it
        (298, 0.99, None),  # 1 - 0.99**298 = 0.9499: not enough rows
        (100, 0.5, 59),
    ],
)
def test_upper_bound_rank(n, q, rank):
    assert _upper_bound_rank(n, q, 0.95) == rank


def test_thresholds_lie_above_their_quantile_with_the_stated_confidence():
    rng = np.random.default_rng(0)
    trials = 400
    covered = {q: 0 for q in ("0.9", "0.95", "0.99")}
    for _ in range(trials):
        cal = calibration(rng.uniform(size=574))  # the true q-quantile of U(0, 1) is q
        for q in covered:
            assert cal["thresholds"][q] >= cal["quantiles"][q]
            covered[q] += cal["thresholds"][q] >= float(q)
    # 95 % confidence: 380 of 400 expected; 360 is more than 4 standard deviations below.
    assert all(count >= 360 for count in covered.values()), covered
    assert calibration(rng.uniform(size=574))["thresholds"]["0.999"] is None


def _shifted(X: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Digits moved by k pixels along an image axis (1: down, 2: right; negative: back)."""
    img = X.reshape(-1, 8, 8)
    out = np.zeros_like(img)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis], dst[axis] = (
        (slice(None, -k), slice(k, None)) if k > 0 else (slice(-k, None), slice(None, k))
    )
    out[tuple(dst)] = img[tuple(src)]
    return out.reshape(-1, 64)


def test_the_default_thresholds_on_writers_the_calibration_never_saw():
    model = Autoencoder.from_dir(DEFAULT_MODEL, 0.99)
    X, _ = load_optdigits(DATA / "optdigits.tes")

    def flagged(rows: np.ndarray, by: str = "both") -> float:
        f = model.forward(rows)
        assert f.distances is not None and model.threshold is not None
        flags = {
            "both": model.is_outlier(f.errors, f.distances),
            "error": f.errors > model.threshold,
        }[by]
        return float(np.mean(flags))

    assert flagged(X) <= 0.025  # nominal 1 % for each of the two scores
    assert flagged(16.0 - X) >= 0.95  # inverted
    assert flagged(np.rot90(X.reshape(-1, 8, 8), 1, axes=(1, 2)).reshape(-1, 64)) >= 0.95
    for axis in (1, 2):
        for k in (2, -2):
            assert flagged(_shifted(X, axis, k)) >= 0.95, (axis, k)
    # The reconstruction error alone misses most digits shifted vertically (docs/evaluation):
    # the distance to the prototypes is what finds them.
    assert flagged(_shifted(X, 1, 2), by="error") < 0.7
    assert flagged(_shifted(X, 1, -2), by="error") < 0.7


def test_an_edited_calibration_is_refused(tmp_path):
    model = shutil.copytree(DEFAULT_MODEL, tmp_path / "m")
    text = (model / MANIFEST_FILE).read_text()
    (model / MANIFEST_FILE).write_text(text.replace('"0.99": 0.1013', '"0.99": 0.2013', 1))
    with pytest.raises(ArtifactError, match="does not match calibration_sha256"):
        load_artifact(model)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_artifact_is_refused_then_upgraded_as_committed(tmp_path, capsys, version):
    # The committed model as format 1 (no calibration), 2 (no prototypes) or 3 (no reference
    # sample) had it.
    model = shutil.copytree(DEFAULT_MODEL, tmp_path / "m")
    committed = load_artifact(DEFAULT_MODEL)
    manifest = json.loads((model / MANIFEST_FILE).read_text())
    manifest["format_version"] = version
    del manifest["reference_sha256"]
    (model / REFERENCE_FILE).unlink()
    if version <= 2:
        _write_npz(model / WEIGHTS_FILE, replace(committed, prototypes=None).arrays())
        manifest["weights_sha256"] = sha256_file(model / WEIGHTS_FILE)
        del manifest["calibration"]["distance"]
    if version == 1:
        for key in ("calibration", "calibration_sha256"):
            del manifest[key]
    (model / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"python -m training\.calibrate"):
        load_artifact(model)
    assert calibrate_main([str(model), "--train", str(DATA / "optdigits.tra")]) == 0
    assert "574 validation rows" in capsys.readouterr().out
    upgraded = load_artifact(model)
    assert upgraded.model_version == committed.model_version  # the same prototypes
    assert upgraded.manifest["calibration"] == committed.manifest["calibration"]
    assert upgraded.manifest["reference_sha256"] == committed.manifest["reference_sha256"]
    assert (model / "latent.png").read_bytes() == (DEFAULT_MODEL / "latent.png").read_bytes()


def test_calibrating_against_another_training_file_is_refused(tmp_path, capsys):
    model = shutil.copytree(DEFAULT_MODEL, tmp_path / "m")
    assert calibrate_main([str(model), "--train", str(DATA / "optdigits.tes")]) == 1
    assert "not the file" in capsys.readouterr().err
