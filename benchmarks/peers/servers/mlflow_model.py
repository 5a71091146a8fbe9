"""The MLflow peer's model, as MLflow "models from code" (loaded by ``mlflow models serve``).

A ``PythonModel`` around the scikit-learn pipeline (``sklearn_autoencoder.py``, shipped with
the model as a code path). Its input is a float64 tensor of shape (-1, 64): MLflow's scoring
server turns ``{"inputs": [[64 numbers], ...]}`` into a numpy array. The request's ``params``
pick the answer: ``{"output": "encode"}`` gives the codes (``{"predictions": [[z1, z2], ...]}``),
``{"output": "reconstruct"}`` (the default) gives
``{"predictions": {"vectors": [[...], ...], "errors": [...]}}``.
"""

from typing import Any

import mlflow
import numpy as np
import sklearn_autoencoder
from mlflow.pyfunc import PythonModel, PythonModelContext


class Digits(PythonModel):  # type: ignore[misc]
    """The scikit-learn autoencoder as an MLflow pyfunc model."""

    def load_context(self, context: PythonModelContext) -> None:
        self.pipeline, self.latent_layer = sklearn_autoencoder.load(context.artifacts["model"])

    def predict(
        self,
        context: PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> Any:
        if (params or {}).get("output", "reconstruct") == "encode":
            return sklearn_autoencoder.encode(self.pipeline, self.latent_layer, model_input)
        vectors, errors = sklearn_autoencoder.reconstruct(self.pipeline, model_input)
        return {"vectors": vectors.tolist(), "errors": errors.tolist()}


mlflow.models.set_model(Digits())
