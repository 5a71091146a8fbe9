"""The scikit-learn autoencoder built from the committed artifact, and the answers it gives.

The peers serve this model (written with joblib at run time, see :func:`write_model`); every
server's answers, digitcode's included, are checked against it in-process before timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline

from benchmarks.answers import Answers
from benchmarks.peers.servers import sklearn_autoencoder
from service.artifact import Artifact, load_artifact

__all__ = ["TOLERANCE", "SklearnModel", "write_model"]

# The committed model is float32 and digitcode computes in float32; scikit-learn computes the
# same weights in float64. On all 1797 rows of optdigits.tes the two differ by at most 8e-7 in
# the codes, 1e-4 in the reconstructed pixels (0..16) and 2e-7 in the errors (a fifth of the
# tolerance below, which is relative and absolute; for fewer than 32 rows per request, with
# np.tanh rather than the folded form, 4e-7, 4e-5 and 1.2e-7); a wrong weight,
# activation or scaling shows up as 1e-2 or more. The peers compute in float64 with the same
# scikit-learn and numpy as the reference, so they agree with it far more closely.
TOLERANCE = 1e-4  # relative and absolute


class SklearnModel:
    """The scikit-learn pipeline with the artifact's weights, and its latent layer.

    Parameters
    ----------
    artifact : Artifact
        A loaded artifact (``service.artifact.load_artifact``).
    """

    def __init__(self, artifact: Artifact) -> None:
        self.pipeline: Pipeline = sklearn_autoencoder.build(
            artifact.weights,
            artifact.biases,
            artifact.activation,
            artifact.scaler_min,
            artifact.scaler_scale,
        )
        self.latent_layer = int(artifact.latent_layer)
        self.latent_size = int(artifact.layer_sizes[self.latent_layer])

    @classmethod
    def from_dir(cls, model_dir: Path | str) -> SklearnModel:
        """Load (and verify) the artifact in ``model_dir``."""
        return cls(load_artifact(model_dir))

    def answers(self, X: NDArray[np.float64]) -> Answers:
        """The codes, reconstructions and errors of pixel rows ``X`` (n, 64)."""
        vectors, errors = sklearn_autoencoder.reconstruct(self.pipeline, X)
        latent = sklearn_autoencoder.encode(self.pipeline, self.latent_layer, X)
        return Answers(latent=latent, vectors=vectors, errors=errors)


def write_model(model: SklearnModel, path: Path) -> Path:
    """Write the model with joblib (see ``sklearn_autoencoder.save``) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sklearn_autoencoder.save(path, model.pipeline, model.latent_layer)
    return path
