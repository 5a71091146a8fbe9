"""The BentoML peer: ``bentoml serve bento_service:Digits`` (run by build/peers/bentoml/venv).

One ``@bentoml.service`` with one worker and two APIs, ``POST /encode`` and
``POST /reconstruct``, each taking ``{"vectors": [[64 numbers], ...]}`` (BentoML's JSON body:
one field per parameter, the array validated and converted to numpy by BentoML). Both answer
JSON: ``/encode`` the codes as a nested list, ``/reconstruct``
``{"vectors": [[...], ...], "errors": [...]}``. The model is the joblib file named by
``PEER_MODEL`` (see ``sklearn_autoencoder.py``, imported from this directory).
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
import sklearn_autoencoder


@bentoml.service(workers=1, traffic={"timeout": 60})
class Digits:
    """The scikit-learn autoencoder behind BentoML's HTTP server."""

    def __init__(self) -> None:
        self.pipeline, self.latent_layer = sklearn_autoencoder.load(os.environ["PEER_MODEL"])

    @bentoml.api
    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Latent codes of pixel rows."""
        return sklearn_autoencoder.encode(self.pipeline, self.latent_layer, vectors)

    @bentoml.api
    def reconstruct(self, vectors: np.ndarray) -> dict[str, Any]:
        """Reconstructions (pixel units) and their errors."""
        X_hat, errors = sklearn_autoencoder.reconstruct(self.pipeline, vectors)
        return {"vectors": X_hat.tolist(), "errors": errors.tolist()}
