"""The LitServe peer: ``python lit_server.py PORT`` (run by build/peers/litserve/venv).

Two ``LitAPI`` s on one ``LitServer``: ``POST /encode`` and ``POST /reconstruct``, each taking
``{"vectors": [[64 numbers], ...]}`` and answering ``{"latent": [[z1, z2], ...]}`` and
``{"vectors": [[...], ...], "errors": [...]}``. CPU, one inference worker per API
(``workers_per_device=1``), one HTTP server process (``num_api_servers=1``), no batching
(``max_batch_size=1``, the default), LitServe's default logging. The model is the joblib file
named by ``PEER_MODEL`` (see ``sklearn_autoencoder.py``, imported from this directory).
"""

import os
import sys

import litserve as ls
import numpy as np
import sklearn_autoencoder


class _Autoencoder(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.pipeline, self.latent_layer = sklearn_autoencoder.load(os.environ["PEER_MODEL"])

    # No annotations on decode_request and encode_response: LitServe reads them to build the
    # FastAPI endpoint, and without them it takes the body as JSON and answers JSON as is.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return np.asarray(request["vectors"], dtype=np.float64)


class Encode(_Autoencoder):
    """``/encode``: the latent codes."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return sklearn_autoencoder.encode(self.pipeline, self.latent_layer, X)

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return {"latent": output.tolist()}


class Reconstruct(_Autoencoder):
    """``/reconstruct``: the reconstructions (pixel units) and their errors."""

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return sklearn_autoencoder.reconstruct(self.pipeline, X)

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return {"vectors": output[0].tolist(), "errors": output[1].tolist()}


def main() -> None:
    server = ls.LitServer(
        [Encode(api_path="/encode"), Reconstruct(api_path="/reconstruct")],
        accelerator="cpu",
        workers_per_device=1,
        timeout=60,
    )
    server.run(
        host="127.0.0.1",
        port=int(sys.argv[1]),
        num_api_servers=1,
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
