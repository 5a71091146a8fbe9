"""The model artifact format: the one definition used by training (write) and service (read).

An artifact is a directory holding three files:

``weights.npz``
    Plain numeric arrays, read with ``allow_pickle=False``: ``scaler_min`` and ``scaler_scale``
    of shape (64,), then ``W0, b0, W1, b1, ...`` for every layer (``W{i}`` of shape
    ``(layer_sizes[i], layer_sizes[i + 1])``, ``b{i}`` of shape ``(layer_sizes[i + 1],)``).
    The scaler is float64. The layers are all float32 or all float64: the precision the
    network was trained in, which is also the one it is served in. Then ``prototypes`` of shape
    ``(k, 64)``, in the layers' dtype: k typical training digits in scaled units (k-means
    centres), the second outlier score's reference (see :func:`calibration`).
``reference.npz``
    A labelled sample of the digits the model was validated on (not fitted on): ``vectors``
    (m, 64) and ``labels`` (m,), both uint8 (pixels 0..16, digits 0..9). The explorer page
    shows their codes; the service serves them at ``GET /reference``.
``manifest.json``
    Format version, the sha256 of ``weights.npz`` and of ``reference.npz``, the network's
    shape, activation and dtype, the outlier calibration (see :func:`calibration`) with its
    own sha256, and the training metadata and metrics.

Writing is atomic: everything goes into a temporary sibling directory that is renamed into place
last, so an interrupted write never leaves a half-written model where the service would load it.
This module depends on numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ACTIVATIONS",
    "CALIBRATION_CONFIDENCE",
    "CALIBRATION_QUANTILES",
    "DTYPES",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "N_FEATURES",
    "PIXEL_MAX",
    "REFERENCE_FILE",
    "WEIGHTS_FILE",
    "Artifact",
    "ArtifactError",
    "Reference",
    "calibration",
    "load_artifact",
    "save_artifact",
    "sha256_file",
]

# 2: the manifest has an outlier calibration of the reconstruction error.
# 3: weights.npz has prototypes, and the calibration covers the distance to them too.
# 4: reference.npz holds a labelled sample of the validation rows.
# Older artifacts are refused with the command that upgrades them (python -m training.calibrate).
FORMAT_VERSION = 4
_MISSING = {1: "no outlier calibration", 2: "no prototypes", 3: "no reference sample"}
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.npz"
REFERENCE_FILE = "reference.npz"
N_FEATURES = 64
PIXEL_MAX = 16.0
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what a network's layers may be stored in

# The error quantiles every calibration records, and the confidence of its thresholds.
CALIBRATION_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
CALIBRATION_CONFIDENCE = 0.95

# Fields every manifest must carry; training adds more (metadata, metrics) that are passed through.
_REQUIRED_FIELDS = {
    "format_version": int,
    "model_version": str,
    "weights_sha256": str,
    "layer_sizes": list,
    "activation": str,
    "latent_layer": int,
    "calibration": dict,
    "calibration_sha256": str,
    "reference_sha256": str,
}

# A fixed timestamp for zip entries, so the same arrays always give the same bytes and sha256.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ArtifactError(Exception):
    """An artifact is missing, malformed, tampered with or inconsistent."""


@dataclass(frozen=True)
class Reference:
    """A labelled sample of digits the model was not fitted on.

    Parameters
    ----------
    vectors : ndarray of uint8, shape (m, 64)
        Pixel values 0..16.
    labels : ndarray of uint8, shape (m,)
        Digits 0..9.
    """

    vectors: NDArray[np.uint8]
    labels: NDArray[np.uint8]

    @classmethod
    def of(cls, X: NDArray[Any], y: NDArray[Any]) -> Reference:
        """From pixel rows (m, 64) and labels (m,) of whole numbers in range."""
        vectors, labels = np.asarray(X), np.asarray(y)
        if vectors.ndim != 2 or vectors.shape[1] != N_FEATURES or labels.shape != (len(vectors),):
            raise ArtifactError("a reference needs rows of 64 pixels and one label per row")
        if len(vectors) == 0 or not (
            np.all(vectors == np.round(vectors))
            and vectors.min() >= 0
            and vectors.max() <= PIXEL_MAX
            and np.all(labels == np.round(labels))
            and labels.min() >= 0
            and labels.max() <= 9
        ):
            raise ArtifactError("reference pixels must be whole numbers 0..16, labels 0..9")
        return cls(vectors.astype(np.uint8), labels.astype(np.uint8))


@dataclass(frozen=True)
class Artifact:
    """A validated model artifact held in memory.

    Parameters
    ----------
    scaler_min : ndarray of shape (64,)
        Per-pixel minimum seen in training (pixel units).
    scaler_scale : ndarray of shape (64,)
        Per-pixel ``1 / (max - min)``, or 1 where a pixel was constant in training.
    weights : list of ndarray
        ``weights[i]`` has shape ``(layer_sizes[i], layer_sizes[i + 1])``.
    biases : list of ndarray
        ``biases[i]`` has shape ``(layer_sizes[i + 1],)``.
        Weights and biases share one dtype, float32 or float64 (see :attr:`dtype`).
    manifest : dict
        The manifest; see :func:`save_artifact` for the fields.
    prototypes : ndarray of shape (k, 64), optional
        Typical training digits in scaled units, in the layers' dtype (training adds them
        with the calibration; every saved artifact, and every artifact loaded for serving, has
        them).
    reference : Reference, optional
        A labelled sample of the validation rows (likewise).
    """

    scaler_min: NDArray[np.float64]
    scaler_scale: NDArray[np.float64]
    weights: list[NDArray[np.floating[Any]]]
    biases: list[NDArray[np.floating[Any]]]
    manifest: dict[str, Any] = field(default_factory=dict)
    prototypes: NDArray[np.floating[Any]] | None = None
    reference: Reference | None = None

    @property
    def dtype(self) -> np.dtype[Any]:
        """The network's precision: the one dtype of its weights and biases.

        Raises
        ------
        ArtifactError
            If the layers are not all float32 or all float64.
        """
        found = {a.dtype.newbyteorder("=") for a in [*self.weights, *self.biases]}
        if len(found) != 1 or not found <= set(DTYPES):
            names = ", ".join(sorted(str(d) for d in found))
            raise ArtifactError(f"layers must be all float32 or all float64, not {names}")
        return found.pop()

    @property
    def layer_sizes(self) -> list[int]:
        return [int(self.weights[0].shape[0])] + [int(w.shape[1]) for w in self.weights]

    @property
    def activation(self) -> str:
        return str(self.manifest["activation"])

    @property
    def latent_layer(self) -> int:
        """Index into ``layer_sizes`` of the 2-unit bottleneck."""
        return int(self.manifest["latent_layer"])

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    def outlier_threshold(self, quantile: float) -> float:
        """The calibrated error threshold for ``quantile``: errors above it are outliers.

        Raises
        ------
        ArtifactError
            If the calibration has no threshold for ``quantile`` (not one it records, or
            too few calibration rows to bound it).
        """
        return self._threshold(quantile, self.manifest.get("calibration") or {})

    def distance_threshold(self, quantile: float) -> float:
        """The calibrated threshold for ``quantile`` of the distance to the nearest prototype.

        Raises
        ------
        ArtifactError
            As :meth:`outlier_threshold`.
        """
        cal = self.manifest.get("calibration") or {}
        return self._threshold(quantile, {**cal, **(cal.get("distance") or {})})

    @staticmethod
    def _threshold(quantile: float, cal: dict[str, Any]) -> float:
        thresholds = cal.get("thresholds", {})
        value = thresholds.get(_quantile_key(quantile))
        if value is None:
            usable = ", ".join(k for k, v in thresholds.items() if v is not None) or "none"
            why = (
                f"{cal.get('rows')} calibration rows cannot bound the {quantile:g} quantile at "
                f"{cal.get('confidence', CALIBRATION_CONFIDENCE):g} confidence"
                if _quantile_key(quantile) in thresholds
                else f"the calibration has no {quantile:g} quantile"
            )
            raise ArtifactError(f"outlier quantile {quantile:g}: {why}; usable: {usable}")
        return float(value)

    def arrays(self) -> dict[str, NDArray[np.floating[Any]]]:
        """The arrays stored in ``weights.npz``, by name."""
        out: dict[str, NDArray[np.floating[Any]]] = {
            "scaler_min": self.scaler_min,
            "scaler_scale": self.scaler_scale,
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"W{i}"] = w
            out[f"b{i}"] = b
        if self.prototypes is not None:
            out["prototypes"] = self.prototypes
        return out


def _quantile_key(q: float) -> str:
    return f"{q:g}"


def _upper_bound_rank(n: int, q: float, confidence: float) -> int | None:
    """The smallest rank k (1-based) with P(X_(k) >= the q-quantile) >= ``confidence``.

    The k-th smallest of n draws lies at or above the true q-quantile unless at least k draws
    fall below it: P = P(Binomial(n, q) <= k - 1). None if even the largest draw is not enough
    (n too small for this q and confidence).
    """
    log_q, log_p = math.log(q), math.log1p(-q)
    cdf = 0.0
    for below in range(n):
        cdf += math.exp(
            math.lgamma(n + 1) - math.lgamma(below + 1) - math.lgamma(n - below + 1)
            + below * log_q + (n - below) * log_p
        )  # fmt: skip
        if cdf >= confidence:
            return below + 1
    return None


def _levels(
    scores: NDArray[np.floating[Any]], quantiles: tuple[float, ...], confidence: float
) -> dict[str, dict[str, float | None]]:
    values = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(values)
    if n == 0 or not np.all(np.isfinite(values)):
        raise ArtifactError("calibration needs at least one finite score")
    thresholds: dict[str, float | None] = {}
    for q in quantiles:
        rank = _upper_bound_rank(n, q, confidence)
        thresholds[_quantile_key(q)] = None if rank is None else float(values[rank - 1])
    return {
        "quantiles": {_quantile_key(q): float(np.quantile(values, q)) for q in quantiles},
        "thresholds": thresholds,
    }


def calibration(
    errors: NDArray[np.floating[Any]],
    distances: NDArray[np.floating[Any]] | None = None,
    quantiles: tuple[float, ...] = CALIBRATION_QUANTILES,
    confidence: float = CALIBRATION_CONFIDENCE,
) -> dict[str, Any]:
    """The outlier calibration of a model: its two scores' quantiles on rows it was not fitted on.

    Parameters
    ----------
    errors : ndarray of shape (n,)
        Reconstruction errors of held-out rows (training's validation split).
    distances : ndarray of shape (n,), optional
        The same rows' distances to the nearest prototype (every artifact has them; other
        scores are calibrated without).
    quantiles : tuple of float
        Levels in (0, 1).
    confidence : float
        How sure each threshold is to lie at or above its quantile.

    Returns
    -------
    dict
        ``rows`` (n), ``confidence``, ``quantiles`` (the errors' empirical quantiles) and
        ``thresholds``: for each level, the smallest error that is an upper confidence bound
        of that quantile (an order statistic; ``None`` when n is too small); ``distance``:
        the same two for the distances. A vector is an outlier when its error or its distance
        is above its threshold for the served level (0.99): on rows like the held-out ones
        each happens to at most 1 % of them, with the stated confidence, so both together to
        at most 2 %.
    """
    errors = np.asarray(errors)
    out: dict[str, Any] = {
        "rows": len(errors),
        "confidence": confidence,
        **_levels(errors, quantiles, confidence),
    }
    if distances is not None:
        if len(distances) != len(errors):
            raise ArtifactError("calibration needs one distance per error")
        out["distance"] = _levels(distances, quantiles, confidence)
    return out


def _calibration_sha256(cal: Any) -> str:
    canonical = json.dumps(cal, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_calibration(path: Path, manifest: dict[str, Any]) -> None:
    cal = manifest["calibration"]
    bad = f"{path}: calibration"
    if _calibration_sha256(cal) != manifest["calibration_sha256"]:
        raise ArtifactError(f"{bad} does not match calibration_sha256 (edited or corrupted)")
    rows, confidence = cal.get("rows"), cal.get("confidence")
    if not (isinstance(rows, int) and rows > 0):
        raise ArtifactError(f"{bad}: rows must be a positive integer")
    if not (isinstance(confidence, float) and 0 < confidence < 1):
        raise ArtifactError(f"{bad}: confidence must be in (0, 1)")
    if not isinstance(cal.get("distance"), dict):
        raise ArtifactError(f"{bad}: no distance calibration (format {FORMAT_VERSION} has one)")
    _check_levels(bad, cal)
    _check_levels(f"{bad} distance", cal["distance"])


def _check_levels(bad: str, cal: dict[str, Any]) -> None:
    quantiles, thresholds = cal.get("quantiles"), cal.get("thresholds")
    if not (isinstance(quantiles, dict) and quantiles and isinstance(thresholds, dict)):
        raise ArtifactError(f"{bad}: quantiles and thresholds must be objects")
    previous = -1.0
    for key, value in sorted(quantiles.items(), key=lambda kv: float(kv[0])):
        try:
            level = float(key)
        except ValueError:
            level = -1.0
        if not 0 < level < 1 or not _nonnegative(value) or value < previous:
            raise ArtifactError(
                f"{bad}: quantile {key!r} must be a level in (0, 1) with a score >= 0, "
                "not below the lower levels'"
            )
        previous = value
        limit = thresholds.get(key)
        if limit is not None and (not _nonnegative(limit) or limit < value):
            raise ArtifactError(f"{bad}: threshold {key!r} must be a number >= its quantile")


def _nonnegative(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value >= 0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_npz(path: Path, arrays: Mapping[str, NDArray[Any]]) -> None:
    # np.savez stamps zip entries with the current time; write entries ourselves with a fixed
    # timestamp so that identical weights give an identical file (and model version).
    kept = (*DTYPES, np.dtype(np.uint8))  # floats, or the reference's small integers
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            with zf.open(info, "w") as f:
                array = arrays[name]
                dtype = array.dtype.newbyteorder("=")
                dtype = dtype if dtype in kept else np.dtype(np.float64)
                np.lib.format.write_array(
                    f, np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
                )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_artifact(
    out_dir: Path | str,
    artifact: Artifact,
    extra_files: Mapping[str, Callable[[Path], None]] | None = None,
) -> dict[str, Any]:
    """Write an artifact to ``out_dir`` atomically and return the manifest written.

    Parameters
    ----------
    out_dir : path
        Target directory. It is replaced as a whole; its parent must exist or is created.
    artifact : Artifact
        Arrays plus a manifest holding at least ``activation``, ``latent_layer`` and
        ``calibration`` (from :func:`calibration`); any other fields (training metadata,
        metrics) are written as given. ``format_version``, ``layer_sizes``, ``dtype``,
        ``weights_sha256``, ``calibration_sha256`` and ``model_version`` are filled in here.
    extra_files : mapping of file name to writer, optional
        Extra files (e.g. a plot) written into the same directory before it is moved into place;
        each writer is called with the target file path.
    """
    dtype = artifact.dtype  # refuses layers of other or mixed dtypes before writing anything
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        weights_path = tmp / WEIGHTS_FILE
        _write_npz(weights_path, artifact.arrays())
        digest = sha256_file(weights_path)
        if not isinstance(artifact.manifest.get("calibration"), dict):
            raise ArtifactError("the manifest has no outlier calibration (see calibration())")
        if artifact.prototypes is None or artifact.reference is None:
            raise ArtifactError("the artifact has no prototypes or no reference sample")
        reference_path = tmp / REFERENCE_FILE
        _write_npz(
            reference_path,
            {"vectors": artifact.reference.vectors, "labels": artifact.reference.labels},
        )
        manifest = {
            **artifact.manifest,
            "calibration_sha256": _calibration_sha256(artifact.manifest["calibration"]),
            "reference_sha256": sha256_file(reference_path),
            "format_version": FORMAT_VERSION,
            "model_version": digest[:12],
            "weights_sha256": digest,
            "layer_sizes": artifact.layer_sizes,
            "dtype": str(dtype),
        }
        with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)
        for child in tmp.iterdir():
            with open(child, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        # Validate what we wrote with the same code the service uses before exposing it.
        load_artifact(tmp)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        _fsync_dir(out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_manifest(path: Path, calibrated: bool = True) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if version in _MISSING and not calibrated:  # to be upgraded: checked as in format 1
        version = FORMAT_VERSION
        manifest = {**manifest, "calibration": {}, "calibration_sha256": "", "reference_sha256": ""}
    elif version in _MISSING:
        raise ArtifactError(
            f"{path}: format_version {version} has {_MISSING[version]}; upgrade it with "
            f"python -m training.calibrate {path.parent} --train <its optdigits.tra>"
        )
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version is {version!r}, this service reads {FORMAT_VERSION}"
        )
    for name, kind in _REQUIRED_FIELDS.items():
        if not isinstance(manifest.get(name), kind):
            raise ArtifactError(f"{path}: field {name!r} missing or not a {kind.__name__}")
    sizes = manifest["layer_sizes"]
    if (
        len(sizes) < 3
        or not all(isinstance(s, int) and s > 0 for s in sizes)
        or sizes[0] != N_FEATURES
        or sizes[-1] != N_FEATURES
    ):
        raise ArtifactError(f"{path}: layer_sizes must run from {N_FEATURES} to {N_FEATURES}")
    latent = manifest["latent_layer"]
    if not 0 < latent < len(sizes) - 1 or sizes[latent] != 2:
        raise ArtifactError(f"{path}: latent_layer {latent} is not a 2-unit hidden layer")
    if manifest["activation"] not in ACTIVATIONS:
        raise ArtifactError(f"{path}: unknown activation {manifest['activation']!r}")
    if calibrated:
        _check_calibration(path, manifest)
    return manifest


def _read_arrays(path: Path, names: list[str]) -> dict[str, NDArray[np.floating[Any]]]:
    out: dict[str, NDArray[np.floating[Any]]] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = sorted(set(names) - set(npz.files))
            if missing:
                raise ArtifactError(f"{path}: missing arrays {', '.join(missing)}")
            for name in names:
                array = npz[name]
                native = array.dtype.newbyteorder("=")
                if native not in DTYPES:
                    raise ArtifactError(
                        f"{path}: array {name} has dtype {array.dtype}, not float32 or float64"
                    )
                out[name] = array.astype(native, copy=False)
    except ArtifactError:
        raise
    except ValueError as exc:
        # Raised for object (pickled) arrays when allow_pickle=False, among others.
        raise ArtifactError(f"{path}: unreadable array data ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{path}: not a readable .npz file ({exc})") from None
    return out


def _check_file(path: Path, manifest: dict[str, Any], field: str) -> None:
    """``path`` exists and has the sha256 the manifest records in ``field``."""
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    digest, recorded = sha256_file(path), str(manifest[field])
    if digest != recorded:
        raise ArtifactError(
            f"{path}: sha256 {digest[:12]}… does not match the manifest's {field} "
            f"{recorded[:12]}… (file changed or corrupted)"
        )


def _read_reference(model_dir: Path, manifest: dict[str, Any]) -> Reference:
    path = model_dir / REFERENCE_FILE
    _check_file(path, manifest, "reference_sha256")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if sorted(npz.files) != ["labels", "vectors"]:
                raise ArtifactError(f"{path}: expected the arrays labels and vectors")
            vectors, labels = npz["vectors"], npz["labels"]
    except ArtifactError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{path}: not a readable .npz file ({exc})") from None
    if vectors.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ArtifactError(f"{path}: vectors and labels must be uint8")
    try:
        return Reference.of(vectors, labels)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def load_artifact(model_dir: Path | str, calibrated: bool = True) -> Artifact:
    """Read and verify an artifact directory.

    Checks the format version, the outlier calibration and its sha256, the sha256 of the
    weights file and of the reference sample (and that sample's shapes and values), every
    array's presence, dtype (float32 or float64, one dtype for all layers), shape and
    finiteness. Never unpickles anything. With ``calibrated=False`` (for
    ``training.calibrate`` only) the calibration, prototypes and reference sample are not read
    or checked, and the older formats 1 to 3 are read.

    Raises
    ------
    ArtifactError
        With a message naming the file and what is wrong.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model directory not found")
    manifest = _read_manifest(model_dir / MANIFEST_FILE, calibrated)
    weights_path = model_dir / WEIGHTS_FILE
    _check_file(weights_path, manifest, "weights_sha256")
    sizes: list[int] = manifest["layer_sizes"]
    n_layers = len(sizes) - 1
    expected: dict[str, tuple[int, ...]] = {
        "scaler_min": (N_FEATURES,),
        "scaler_scale": (N_FEATURES,),
    }
    for i in range(n_layers):
        expected[f"W{i}"] = (sizes[i], sizes[i + 1])
        expected[f"b{i}"] = (sizes[i + 1],)
    if calibrated:
        expected["prototypes"] = (-1, N_FEATURES)
    arrays = _read_arrays(weights_path, list(expected))
    for name, shape in expected.items():
        found = arrays[name].shape
        if (
            len(found) != len(shape)
            or any(e not in (-1, f) for e, f in zip(shape, found, strict=True))
            or 0 in found
        ):
            wanted = "(k, 64) with k >= 1" if name == "prototypes" else str(shape)
            raise ArtifactError(
                f"{weights_path}: array {name} has shape {found}, expected {wanted}"
            )
        if not np.all(np.isfinite(arrays[name])):
            raise ArtifactError(f"{weights_path}: array {name} contains NaN or infinity")
    if np.any(arrays["scaler_scale"] <= 0):
        raise ArtifactError(f"{weights_path}: scaler_scale must be positive")
    artifact = Artifact(
        scaler_min=arrays["scaler_min"].astype(np.float64),
        scaler_scale=arrays["scaler_scale"].astype(np.float64),
        weights=[arrays[f"W{i}"] for i in range(n_layers)],
        biases=[arrays[f"b{i}"] for i in range(n_layers)],
        manifest=manifest,
        prototypes=arrays.get("prototypes"),
    )
    try:
        dtype = str(artifact.dtype)
    except ArtifactError as exc:
        raise ArtifactError(f"{weights_path}: {exc}") from None
    if calibrated:
        artifact = replace(artifact, reference=_read_reference(model_dir, manifest))
    if artifact.prototypes is not None and artifact.prototypes.dtype != artifact.dtype:
        raise ArtifactError(f"{weights_path}: prototypes are not {dtype} like the layers")
    declared = manifest.get("dtype", dtype)  # absent in artifacts from before it
    if declared != dtype:
        raise ArtifactError(
            f"{model_dir / MANIFEST_FILE}: manifest says dtype {declared!r}, the layers are {dtype}"
        )
    return artifact
