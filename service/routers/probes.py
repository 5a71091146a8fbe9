"""Probes and metadata: ``/healthz``, ``/readyz``, ``/model``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.dependencies import native_model, ready_model
from service.schemas import ErrorResponse, Health, ModelInfo

__all__ = ["router"]

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": ErrorResponse, "description": "Model not loaded yet, or draining."}},
    summary="Readiness: the model is loaded and the server is not shutting down",
)
async def readyz(request: Request) -> Health:
    ready_model(request)
    return Health(status="ready")


@router.get(
    "/model",
    response_model=ModelInfo,
    responses={503: {"model": ErrorResponse, "description": "Model not loaded yet."}},
    summary="The served model's manifest (the newest version of the default model)",
)
async def model_info(request: Request) -> ModelInfo:
    return ModelInfo.model_validate(native_model(request).model.manifest)
