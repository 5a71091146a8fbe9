"""Write the MLflow peer's model directory: ``python mlflow_build.py MODEL.joblib OUT_DIR``.

Run by build/peers/mlflow/venv. ``mlflow.pyfunc.save_model`` of ``mlflow_model.py`` (models from
code) with the joblib file as its artifact, ``sklearn_autoencoder.py`` as a code path, and a
signature: a float64 tensor of shape (-1, 64) in, the ``output`` parameter
(``"encode"`` or ``"reconstruct"``, default ``"reconstruct"``).
"""

import sys
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

HERE = Path(__file__).resolve().parent


def main() -> None:
    model_file, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 64))]),
        params=ParamSchema([ParamSpec("output", "string", "reconstruct")]),
    )
    mlflow.pyfunc.save_model(
        path=str(out_dir),
        python_model=str(HERE / "mlflow_model.py"),
        artifacts={"model": str(model_file)},
        code_paths=[str(HERE / "sklearn_autoencoder.py")],
        signature=signature,
    )


if __name__ == "__main__":
    main()
