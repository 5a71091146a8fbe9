"""The FastAPI application: ``create_app(settings)`` builds it, ``app`` is the default one.

``uvicorn service.app:app`` serves the default settings; ``python -m service`` does the same but
checks the model first and exits with one clear line if it cannot be loaded.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.model import Autoencoder
from service.parsing import RequestError
from service.routers import inference, probes
from service.settings import Settings, get_settings

__all__ = ["MODEL_VERSION_HEADER", "app", "create_app"]

MODEL_VERSION_HEADER = "X-Model-Version"
_NO_MODEL = "none"

logger = logging.getLogger("digitcode")


class ModelVersionMiddleware:
    """Adds ``X-Model-Version`` to every response (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                model: Autoencoder | None = self.state.model
                version = model.version if model is not None else _NO_MODEL
                headers = [*message.get("headers", []), (b"x-model-version", version.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)


async def _request_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def create_app(settings: Settings | None = None, model: Autoencoder | None = None) -> FastAPI:
    """Build the application.

    Parameters
    ----------
    settings : Settings, optional
        Defaults to :func:`service.settings.get_settings` (the environment).
    model : Autoencoder, optional
        An already loaded model; if None, the model is loaded from ``settings.model_dir`` when
        the app starts (lifespan), not at import.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.model is None:
            app.state.model = Autoencoder.from_dir(settings.model_dir)
        logger.info("serving model %s from %s", app.state.model.version, settings.model_dir)
        yield

    application = FastAPI(
        title="digitcode",
        summary="Encode 8×8 handwritten-digit vectors to a 2-D latent space and back.",
        description=(
            "All vectors are 64 pixel values in [0, 16] (row-major 8×8, the UCI optdigits "
            "units); latent codes are 2 numbers. Every response carries `X-Model-Version`."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    application.state.settings = settings
    application.state.model = model
    application.add_middleware(ModelVersionMiddleware, state=application.state)
    application.add_exception_handler(RequestError, _request_problem)
    application.include_router(probes.router)
    application.include_router(inference.router)
    return application


app = create_app()
