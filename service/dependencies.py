"""Request-scoped helpers shared by the routers: the data plane and the native model."""

from __future__ import annotations

from fastapi import Request

from service.dataplane import DataPlane
from service.repository import ServedModel

__all__ = ["dataplane_of", "native_model"]


def dataplane_of(request: Request) -> DataPlane:
    """The data plane the app was built with."""
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def native_model(request: Request) -> ServedModel:
    """The model the native endpoints serve, or 503 while there is none."""
    return dataplane_of(request).native_model()
