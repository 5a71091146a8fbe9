"""The two baseline apps the service is measured against.

``noop_app``
    A FastAPI app whose ``POST /encode`` ignores the body and answers ``{"ok": true}``: the
    ceiling for one uvicorn worker on this machine.
``straightforward_app``
    The issue's baseline, as it describes it: a pydantic ``list[list[float]]`` request body,
    the same numpy forward pass and weights as the service
    (:class:`service.model.Autoencoder`), ``.tolist()``, and FastAPI's default JSON response
    for the returned dict. The targets are measured against this one.
``typed_app``
    The same with pydantic response models as return annotations, which puts FastAPI on its
    faster pydantic serialiser: a harder baseline, reported beside the issue's for honesty.

Both serve ``GET /readyz`` so start-up is measured the same way for all three servers. Start
them with ``python -m uvicorn benchmarks.apps:noop_app --workers 1 --log-level warning``; the
straightforward app loads ``$DIGITCODE_MODEL_DIR`` (default: the repository's ``models/default``)
at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from service.model import Autoencoder

__all__ = [
    "create_noop_app",
    "create_straightforward_app",
    "create_typed_app",
    "noop_app",
    "straightforward_app",
    "typed_app",
]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"


class Vectors(BaseModel):
    """Request of /encode and /reconstruct, answer of /decode."""

    vectors: list[list[float]]


class Latent(BaseModel):
    """Request of /decode, answer of /encode."""

    latent: list[list[float]]


class Reconstruction(BaseModel):
    """Answer of /reconstruct."""

    vectors: list[list[float]]
    errors: list[float]


class Ready(BaseModel):
    status: str


def create_noop_app() -> FastAPI:
    """A FastAPI app whose ``POST /encode`` ignores the body and returns ``{"ok": true}``."""
    app = FastAPI(title="noop")

    @app.get("/readyz")
    async def readyz() -> Ready:
        return Ready(status="ready")

    @app.post("/encode")
    async def encode() -> dict[str, bool]:
        return {"ok": True}

    return app


def create_straightforward_app(model: Autoencoder) -> FastAPI:
    """The issue's baseline: pydantic request models, numpy, ``.tolist()``, dicts returned.

    Parameters
    ----------
    model : Autoencoder
        The loaded weights; the service under test must serve the same ones.
    """
    app = FastAPI(title="straightforward")

    @app.get("/readyz")
    async def readyz() -> Ready:
        return Ready(status="ready")

    @app.post("/encode")
    async def encode(body: Vectors) -> dict[str, Any]:
        Z = model.encode(np.asarray(body.vectors, dtype=np.float64))
        return {"latent": Z.tolist()}

    @app.post("/decode")
    async def decode(body: Latent) -> dict[str, Any]:
        X = model.decode(np.asarray(body.latent, dtype=np.float64))
        return {"vectors": X.tolist()}

    @app.post("/reconstruct")
    async def reconstruct(body: Vectors) -> dict[str, Any]:
        X_hat, errors = model.reconstruct(np.asarray(body.vectors, dtype=np.float64))
        return {"vectors": X_hat.tolist(), "errors": errors.tolist()}

    return app


def create_typed_app(model: Autoencoder) -> FastAPI:
    """The baseline with pydantic response models: FastAPI's faster serialisation path.

    Parameters
    ----------
    model : Autoencoder
        The loaded weights; the service under test must serve the same ones.
    """
    app = FastAPI(title="typed")

    @app.get("/readyz")
    async def readyz() -> Ready:
        return Ready(status="ready")

    @app.post("/encode")
    async def encode(body: Vectors) -> Latent:
        Z = model.encode(np.asarray(body.vectors, dtype=np.float64))
        return Latent(latent=Z.tolist())

    @app.post("/decode")
    async def decode(body: Latent) -> Vectors:
        X = model.decode(np.asarray(body.latent, dtype=np.float64))
        return Vectors(vectors=X.tolist())

    @app.post("/reconstruct")
    async def reconstruct(body: Vectors) -> Reconstruction:
        X_hat, errors = model.reconstruct(np.asarray(body.vectors, dtype=np.float64))
        return Reconstruction(vectors=X_hat.tolist(), errors=errors.tolist())

    return app


def _model_dir() -> Path:
    return Path(os.environ.get("DIGITCODE_MODEL_DIR", str(DEFAULT_MODEL_DIR)))


noop_app = create_noop_app()
_model = Autoencoder.from_dir(_model_dir())
straightforward_app = create_straightforward_app(_model)
typed_app = create_typed_app(_model)
