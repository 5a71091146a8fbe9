"""The model repository: every model and version the service serves, loaded by one loader.

``DIGITCODE_MODEL_DIR`` names either

one artifact (a directory holding ``manifest.json``)
    served as the model ``digitcode`` (:data:`SINGLE_MODEL_NAME`), whose only version is the
    artifact's ``model_version``; or
a repository, Triton's layout
    ``<dir>/<model-name>/<version>/`` holding artifacts: every model and version is served, a
    version's name is its directory's name, and the newest version of a model (by the
    manifest's ``created_at``, then by name) answers requests that name no version.

A repository is immutable once built; a reload builds a new one and swaps it in, so a request
keeps the model it started with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.artifact import MANIFEST_FILE, ArtifactError
from service.errors import RequestError
from service.model import Autoencoder
from service.operations import SIGNATURES

__all__ = ["SINGLE_MODEL_NAME", "Repository", "ServedModel", "load_repository", "version_order"]

SINGLE_MODEL_NAME = "digitcode"
# Model and version names appear in URLs, metric labels and log lines: keep them plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# <name> + suffix is how the OIP names each model's other signatures (service.operations).
_RESERVED_SUFFIXES = tuple(s.suffix for s in SIGNATURES if s.suffix)


@dataclass(frozen=True)
class ServedModel:
    """One version of one model, loaded and verified."""

    name: str
    version: str
    model: Autoencoder
    path: Path

    @property
    def created_at(self) -> str:
        return str(self.model.manifest.get("created_at", ""))


@dataclass(frozen=True)
class Repository:
    """The served models: ``models[name][version]``, and each model's newest version.

    Parameters
    ----------
    models : mapping of str to mapping of str to ServedModel
    default : str
        The model the native endpoints (``/encode`` …) serve.
    """

    models: Mapping[str, Mapping[str, ServedModel]]
    default: str
    _newest: dict[str, ServedModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        newest = {
            name: max(versions.values(), key=lambda m: (m.created_at, version_order(m.version)))
            for name, versions in self.models.items()
        }
        object.__setattr__(self, "_newest", newest)  # frozen: computed once, read per request

    def newest(self, name: str) -> ServedModel:
        """The newest version of model ``name`` (KeyError if unknown)."""
        return self._newest[name]

    def get(
        self, name: str | None, version: str | None = None, label: str | None = None
    ) -> ServedModel:
        """The model ``name`` (default: the native one) at ``version`` (default: newest).

        Parameters
        ----------
        name : str or None
        version : str or None
        label : str, optional
            The name the request used, for the error message (e.g. ``<name>-decoder``).

        Raises
        ------
        RequestError
            404 naming the unknown model or version, and what is served.
        """
        name = self.default if name is None else name
        if version is None:
            newest = self._newest.get(name)
            if newest is not None:
                return newest
        versions = self.models.get(name)
        if versions is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise RequestError(404, f"Unknown model {name!r} (served: {known})")
        found = versions.get(version) if version is not None else None
        if found is None:
            known = ", ".join(sorted(versions))
            raise RequestError(
                404,
                f"Unknown version {version!r} of model {label or name!r} (versions: {known})",
            )
        return found

    def __iter__(self) -> Iterator[ServedModel]:
        for name in sorted(self.models):
            for version in sorted(self.models[name]):
                yield self.models[name][version]


def version_order(version: str) -> tuple[int, int, str]:
    """Sort key for version names: numbers by value (``9`` before ``10``), then the others."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _versions_of(model_dir: Path) -> Iterator[Path]:
    for child in sorted(model_dir.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            yield child


def load_repository(
    path: Path, default: str = SINGLE_MODEL_NAME, outlier_quantile: float = 0.99
) -> tuple[Repository, list[ArtifactError]]:
    """Load everything under ``path``, each model with its threshold for ``outlier_quantile``.

    Returns
    -------
    repository : Repository
        The artifacts that loaded.
    refused : list of ArtifactError
        One per artifact that did not load (its message names the file and the problem);
        the rest are served.

    Raises
    ------
    ArtifactError
        If ``path`` is missing, holds no artifact, or the default model has no loadable version
        (a single artifact that does not load raises its own error).
    """
    path = Path(path)
    if (path / MANIFEST_FILE).is_file() or not path.is_dir():
        model = Autoencoder.from_dir(path, outlier_quantile)  # raises naming file and problem
        if default != SINGLE_MODEL_NAME:
            raise ArtifactError(
                f"{path}: one artifact, served as the model {SINGLE_MODEL_NAME!r}, but the "
                f"default model (DIGITCODE_DEFAULT_MODEL) is {default!r}: point "
                "DIGITCODE_MODEL_DIR at a repository that has it, or leave the setting out"
            )
        served = ServedModel(SINGLE_MODEL_NAME, model.version, model, path)
        return Repository({SINGLE_MODEL_NAME: {model.version: served}}, SINGLE_MODEL_NAME), []
    models: dict[str, dict[str, ServedModel]] = {}
    refused: list[ArtifactError] = []
    for model_dir in _versions_of(path):
        if (model_dir / MANIFEST_FILE).is_file():
            refused.append(
                ArtifactError(
                    f"{model_dir}: an artifact directly in a model directory; put it in a "
                    f"version directory, {model_dir}/<version>/"
                )
            )
            continue
        if model_dir.name.endswith(_RESERVED_SUFFIXES):
            refused.append(
                ArtifactError(
                    f"{model_dir}: a model name may not end in "
                    f"{' or '.join(_RESERVED_SUFFIXES)} (its decoder is served under that name)"
                )
            )
            continue
        for version_dir in _versions_of(model_dir):
            name, version = model_dir.name, version_dir.name
            if not (_NAME.fullmatch(name) and _NAME.fullmatch(version)):
                refused.append(
                    ArtifactError(
                        f"{version_dir}: model and version names must match {_NAME.pattern}"
                    )
                )
                continue
            try:
                model = Autoencoder.from_dir(version_dir, outlier_quantile)
            except ArtifactError as exc:
                refused.append(exc)
                continue
            models.setdefault(name, {})[version] = ServedModel(name, version, model, version_dir)
    if not models:
        found = "; ".join(str(e) for e in refused)
        raise ArtifactError(
            f"{path}: no loadable artifact (expected {MANIFEST_FILE} here, or "
            f"<model>/<version>/{MANIFEST_FILE} below){': ' + found if found else ''}"
        )
    if default not in models:
        raise ArtifactError(
            f"{path}: the default model {default!r} (DIGITCODE_DEFAULT_MODEL) has no loadable "
            f"version; models found: {', '.join(sorted(models))}"
        )
    return Repository(models, default), refused
