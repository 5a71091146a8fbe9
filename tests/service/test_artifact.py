import json
import pickle
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.artifact import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    _calibration_sha256,
    _write_npz,
    load_artifact,
    save_artifact,
    sha256_file,
)
from service.model import Autoencoder


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def _rewrite_manifest(model_dir: Path, **changes) -> None:
    path = model_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _rewrite_weights(model_dir: Path, arrays: dict) -> None:
    """Replace weights.npz and fix the manifest's sha256, so only the array check can fail."""
    np.savez(model_dir / WEIGHTS_FILE, **arrays)
    digest = sha256_file(model_dir / WEIGHTS_FILE)
    _rewrite_manifest(model_dir, weights_sha256=digest)


def _arrays(model_dir: Path) -> dict:
    with np.load(model_dir / WEIGHTS_FILE) as npz:
        return {name: npz[name] for name in npz.files}


def test_round_trip_keeps_arrays_and_fills_manifest(tiny_model_dir, tiny_mlp):
    mlp = tiny_mlp[0]
    artifact = load_artifact(tiny_model_dir)
    assert artifact.layer_sizes == [64, 8, 2, 8, 64]
    assert artifact.latent_layer == 2
    assert artifact.manifest["format_version"] == FORMAT_VERSION
    assert artifact.manifest["weights_sha256"] == sha256_file(tiny_model_dir / WEIGHTS_FILE)
    assert artifact.model_version == artifact.manifest["weights_sha256"][:12]
    assert artifact.manifest["preset"] == "test"
    for got, want in zip(artifact.weights, mlp.coefs_, strict=True):
        np.testing.assert_array_equal(got, want)


def test_same_arrays_give_identical_bytes(tmp_path, tiny_model_dir):
    artifact = load_artifact(tiny_model_dir)
    a = save_artifact(tmp_path / "a", artifact)
    b = save_artifact(tmp_path / "b", artifact)
    assert a["weights_sha256"] == b["weights_sha256"]
    assert (tmp_path / "a" / WEIGHTS_FILE).read_bytes() == (
        tmp_path / "b" / WEIGHTS_FILE
    ).read_bytes()


def test_weights_file_is_pickle_free(tiny_model_dir):
    with np.load(tiny_model_dir / WEIGHTS_FILE, allow_pickle=False) as npz:
        assert all(npz[name].dtype == np.float64 for name in npz.files)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(ArtifactError, match="nowhere: model directory not found"):
        load_artifact(tmp_path / "nowhere")


def test_missing_manifest(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    (model / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.json: file not found"):
        load_artifact(model)


def test_manifest_not_json(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    (model / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match=r"manifest\.json: not valid JSON"):
        load_artifact(model)


def test_wrong_format_version(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    _rewrite_manifest(model, format_version=99)
    with pytest.raises(ArtifactError, match="format_version is 99"):
        load_artifact(model)


def test_tampered_weights_fail_sha256(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    data = bytearray((model / WEIGHTS_FILE).read_bytes())
    data[-100] ^= 0xFF
    (model / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"weights\.npz: sha256 .* does not match"):
        load_artifact(model)


def test_truncated_weights(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    data = (model / WEIGHTS_FILE).read_bytes()
    (model / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    _rewrite_manifest(model, weights_sha256=sha256_file(model / WEIGHTS_FILE))
    with pytest.raises(ArtifactError, match=r"weights\.npz: not a readable \.npz file"):
        load_artifact(model)


def test_wrong_shape(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    arrays = _arrays(model)
    arrays["W1"] = np.zeros((8, 3))
    _rewrite_weights(model, arrays)
    with pytest.raises(ArtifactError, match=r"array W1 has shape \(8, 3\), expected \(8, 2\)"):
        load_artifact(model)


def test_non_finite_weights(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    arrays = _arrays(model)
    arrays["b0"][3] = np.nan
    _rewrite_weights(model, arrays)
    with pytest.raises(ArtifactError, match="array b0 contains NaN or infinity"):
        load_artifact(model)


def test_pickled_array_is_refused_without_unpickling(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    arrays = _arrays(model)
    sentinel = tmp_path / "pwned"
    arrays["W0"] = np.array([_Exploit(str(sentinel))], dtype=object)
    _rewrite_weights(model, arrays)
    with pytest.raises(ArtifactError, match="unreadable array data"):
        load_artifact(model)
    assert not sentinel.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_missing_array(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    arrays = _arrays(model)
    del arrays["b2"]
    _rewrite_weights(model, arrays)
    with pytest.raises(ArtifactError, match="missing arrays b2"):
        load_artifact(model)


@pytest.mark.parametrize(
    ("prototypes", "message"),
    [
        (None, "missing arrays prototypes"),
        (np.zeros((0, 64)), r"array prototypes has shape \(0, 64\), expected \(k, 64\)"),
        (np.zeros((4, 63)), r"array prototypes has shape \(4, 63\), expected \(k, 64\)"),
        (np.full((4, 64), np.inf), "array prototypes contains NaN or infinity"),
        (np.zeros((4, 64), np.float32), "prototypes are not float64 like the layers"),
    ],
)
def test_bad_prototypes_are_refused(tmp_path, tiny_model_dir, prototypes, message):
    model = _copy(tiny_model_dir, tmp_path)
    arrays = _arrays(model)
    assert arrays["prototypes"].shape[1] == 64 and len(arrays["prototypes"]) >= 1
    if prototypes is None:
        del arrays["prototypes"]
    else:
        arrays["prototypes"] = prototypes
    _rewrite_weights(model, arrays)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(model)


def _write_reference(model_dir: Path, **arrays: np.ndarray) -> None:
    """Replace reference.npz and fix the manifest's sha256, so only the content check can fail."""
    _write_npz(model_dir / REFERENCE_FILE, arrays)
    _rewrite_manifest(model_dir, reference_sha256=sha256_file(model_dir / REFERENCE_FILE))


def test_the_reference_sample_round_trips_and_is_checked(tmp_path, tiny_model_dir):
    reference = load_artifact(tiny_model_dir).reference
    assert reference is not None and reference.vectors.shape == (300, 64)
    assert reference.vectors.dtype == reference.labels.dtype == np.uint8
    model = _copy(tiny_model_dir, tmp_path)
    data = bytearray((model / REFERENCE_FILE).read_bytes())
    data[-1] ^= 1  # one bit flipped
    (model / REFERENCE_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the manifest's reference_sha256"):
        load_artifact(model)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"vectors": np.full((3, 64), 17, np.uint8), "labels": np.zeros(3, np.uint8)}, "0..16"),
        ({"vectors": np.zeros((3, 64), np.uint8), "labels": np.full(3, 10, np.uint8)}, "0..9"),
        ({"vectors": np.zeros((3, 64)), "labels": np.zeros(3, np.uint8)}, "must be uint8"),
        ({"vectors": np.zeros((3, 63), np.uint8), "labels": np.zeros(3, np.uint8)}, "64 pixels"),
        ({"vectors": np.zeros((3, 64), np.uint8)}, "expected the arrays labels and vectors"),
    ],
)
def test_a_bad_reference_sample_is_refused(tmp_path, tiny_model_dir, arrays, message):
    model = _copy(tiny_model_dir, tmp_path)
    _write_reference(model, **arrays)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(model)


def test_a_calibration_without_distances_is_refused(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    cal = json.loads((model / MANIFEST_FILE).read_text())["calibration"]
    del cal["distance"]
    _rewrite_manifest(model, calibration=cal, calibration_sha256=_calibration_sha256(cal))
    with pytest.raises(ArtifactError, match="no distance calibration"):
        load_artifact(model)


def test_failed_write_leaves_previous_model_intact(tmp_path, tiny_model_dir):
    target = _copy(tiny_model_dir, tmp_path)
    before = load_artifact(target).model_version
    artifact = load_artifact(tiny_model_dir)
    changed = replace(artifact, weights=[w + 1.0 for w in artifact.weights])

    def broken_plot(path: Path) -> None:
        raise KeyboardInterrupt  # as if the run were interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        save_artifact(target, changed, {"latent.png": broken_plot})
    assert load_artifact(target).model_version == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left behind


def test_save_replaces_existing_model(tmp_path, tiny_model_dir):
    target = _copy(tiny_model_dir, tmp_path)
    artifact = load_artifact(tiny_model_dir)
    changed = replace(artifact, weights=[w * 0.5 for w in artifact.weights])
    written = save_artifact(target, changed)
    assert load_artifact(target).model_version == written["model_version"]
    assert written["model_version"] != artifact.model_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_zip_entries_have_fixed_timestamps(tiny_model_dir):
    with zipfile.ZipFile(tiny_model_dir / WEIGHTS_FILE) as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_pickle_module_unused_on_load(monkeypatch, tiny_model_dir):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading an artifact")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    assert load_artifact(tiny_model_dir).layer_sizes[0] == 64


def test_kill_9_during_a_write_leaves_the_previous_model_loadable(tmp_path, tiny_model_dir):
    import subprocess
    import sys
    import time

    target = _copy(tiny_model_dir, tmp_path)
    before = load_artifact(target).model_version
    marker = tmp_path / "writing"
    script = f"""
import time
from pathlib import Path
from dataclasses import replace
from service.artifact import load_artifact, save_artifact
a = load_artifact({str(tiny_model_dir)!r})
changed = replace(a, weights=[w + 1 for w in a.weights])
def slow_plot(path):
    Path({str(marker)!r}).touch()
    time.sleep(60)
save_artifact({str(target)!r}, changed, {{"latent.png": slow_plot}})
"""
    from tests.conftest import ROOT

    writer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the writer never reached the middle of its write"
        writer.kill()  # SIGKILL: no cleanup handlers run
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert load_artifact(target).model_version == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.tmp-")]
    assert len(leftovers) == 1  # a hidden temporary sibling, never the model directory


def test_float32_layers_stay_float32(tmp_path, tiny_model_dir):
    artifact = load_artifact(tiny_model_dir)
    assert artifact.dtype == np.float64 and artifact.manifest["dtype"] == "float64"
    assert artifact.prototypes is not None
    narrow = replace(
        artifact,
        weights=[w.astype(np.float32) for w in artifact.weights],
        biases=[b.astype(np.float32) for b in artifact.biases],
        prototypes=artifact.prototypes.astype(np.float32),
    )
    manifest = save_artifact(tmp_path / "narrow", narrow)
    assert manifest["dtype"] == "float32"
    loaded = load_artifact(tmp_path / "narrow")
    assert loaded.dtype == np.float32
    assert {w.dtype for w in loaded.weights + loaded.biases} == {np.dtype(np.float32)}
    assert loaded.scaler_min.dtype == loaded.scaler_scale.dtype == np.float64
    # half the bytes of the float64 file (zip overhead aside)
    ratio = (tmp_path / "narrow" / WEIGHTS_FILE).stat().st_size / (
        tiny_model_dir / WEIGHTS_FILE
    ).stat().st_size
    assert 0.4 < ratio < 0.8


@pytest.mark.parametrize(
    ("name", "dtype", "message"),
    [
        ("W1", np.float32, "layers must be all float32 or all float64, not float32, float64"),
        ("W0", np.float16, "array W0 has dtype float16, not float32 or float64"),
    ],
)
def test_other_or_mixed_layer_dtypes_are_refused(tmp_path, tiny_model_dir, name, dtype, message):
    model = _copy(tiny_model_dir, tmp_path)
    arrays = _arrays(model)
    arrays[name] = arrays[name].astype(dtype)
    _rewrite_weights(model, arrays)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(model)


def test_manifest_dtype_must_match_the_layers(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path)
    _rewrite_manifest(model, dtype="float32")
    with pytest.raises(
        ArtifactError, match="manifest says dtype 'float32', the layers are float64"
    ):
        load_artifact(model)
    _rewrite_manifest(model, dtype=None)
    manifest = json.loads((model / MANIFEST_FILE).read_text())
    del manifest["dtype"]  # artifacts written before the field existed still load
    (model / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert load_artifact(model).dtype == np.float64


@pytest.mark.parametrize(
    ("dtypes", "message"),
    [
        ((np.float32, np.float64), "not float32, float64"),
        ((np.float16, np.float16), "not float16"),
    ],
)
def test_saving_other_or_mixed_layer_dtypes_is_refused(tmp_path, tiny_model_dir, dtypes, message):
    artifact = load_artifact(tiny_model_dir)
    bad = replace(
        artifact,
        weights=[w.astype(dtypes[i % 2]) for i, w in enumerate(artifact.weights)],
        biases=[b.astype(dtypes[i % 2]) for i, b in enumerate(artifact.biases)],
    )
    with pytest.raises(ArtifactError, match=message):
        save_artifact(tmp_path / "bad", bad)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ArtifactError, match=message):  # nor computed in a mix of precisions
        Autoencoder(bad)


def test_big_endian_float32_layers_are_saved_as_float32(tmp_path, tiny_model_dir):
    artifact = load_artifact(tiny_model_dir)
    big = replace(
        artifact,
        weights=[w.astype(">f4") for w in artifact.weights],
        biases=[b.astype(">f4") for b in artifact.biases],
        prototypes=None if artifact.prototypes is None else artifact.prototypes.astype(">f4"),
    )
    assert save_artifact(tmp_path / "big", big)["dtype"] == "float32"
    loaded = load_artifact(tmp_path / "big")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded.weights[0], artifact.weights[0].astype(np.float32))
