"""Request-scoped helpers shared by the routers: the model and the settings."""

from __future__ import annotations

from fastapi import Request

from service.model import Autoencoder
from service.parsing import RequestError
from service.settings import Settings

__all__ = ["get_model", "settings_of"]


def settings_of(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_model(request: Request) -> Autoencoder:
    """The loaded model, or 503 while there is none."""
    model: Autoencoder | None = request.app.state.model
    if model is None:
        raise RequestError(503, "Model not loaded yet")
    return model
