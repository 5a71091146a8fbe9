"""The Open Inference Protocol's health and metadata endpoints (``infer`` is in
:mod:`service.protocols.oip`)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request

from service.dependencies import dataplane_of, ready_model
from service.protocols.oip import DATATYPES
from service.schemas import (
    OipError,
    OipLive,
    OipModelMetadata,
    OipModelReady,
    OipReady,
    OipServerMetadata,
    OipTensorMetadata,
)

__all__ = ["router"]

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": OipError, "description": "No model loaded yet, or draining."}
}
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": OipError, "description": "Unknown model or version."}
}
_DATATYPE = {dtype.itemsize: name for name, dtype in DATATYPES.items()}


def _server_version() -> str:
    try:
        return metadata.version("digitcode")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@router.get("", response_model=OipServerMetadata, summary="Server metadata")
async def server_metadata() -> OipServerMetadata:
    return OipServerMetadata(
        name="digitcode", version=_server_version(), extensions=["binary_tensor_data"]
    )


@router.get("/health/live", response_model=OipLive, summary="Server live")
async def live() -> OipLive:
    return OipLive(live=True)


@router.get("/health/ready", response_model=OipReady, responses=_NOT_READY, summary="Server ready")
async def ready(request: Request) -> OipReady:
    ready_model(request)  # 503 while nothing is loaded, or draining
    return OipReady(ready=True)


def _metadata(request: Request, name: str, version: str | None) -> OipModelMetadata:
    """Metadata of OIP model ``name`` at ``version`` (the newest when None)."""
    dataplane = dataplane_of(request)
    served, signature = dataplane.resolve(name, version)
    request.state.served = served  # X-Model-Version, metrics: the model asked about
    datatype = _DATATYPE[served.model.dtype.itemsize]
    return OipModelMetadata(
        name=name,
        versions=dataplane.versions(served.name),
        platform="digitcode_numpy",
        inputs=[
            OipTensorMetadata(
                name=signature.input.key, datatype=datatype, shape=[-1, signature.input.width]
            )
        ],
        outputs=[
            OipTensorMetadata(name=o.name, datatype=o.datatype or datatype, shape=o.shape(-1))
            for o in signature.outputs
        ],
        parameters={
            "model_version": served.version,
            "input_datatypes": ",".join(DATATYPES),
            **(
                {
                    "outlier_threshold": float(served.model.threshold or 0.0),
                    "distance_threshold": float(served.model.distance_threshold or 0.0),
                    "outlier_quantile": served.model.outlier_quantile,
                }
                if "is_outlier" in signature.output_names
                else {}
            ),
        },
    )


@router.get(
    "/models/{model_name}",
    response_model=OipModelMetadata,
    responses={**_UNKNOWN, **_NOT_READY},
    summary="Model metadata (the newest version)",
)
async def model_metadata(request: Request, model_name: str) -> OipModelMetadata:
    return _metadata(request, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=OipModelMetadata,
    responses={**_UNKNOWN, **_NOT_READY},
    summary="Model metadata (a given version)",
)
async def model_version_metadata(
    request: Request, model_name: str, model_version: str
) -> OipModelMetadata:
    return _metadata(request, model_name, model_version)


@router.get(
    "/models/{model_name}/ready",
    response_model=OipModelReady,
    responses={**_UNKNOWN, **_NOT_READY},
    summary="Model ready (the newest version)",
)
async def model_ready(request: Request, model_name: str) -> OipModelReady:
    request.state.served = dataplane_of(request).resolve(model_name, None)[0]
    return OipModelReady(name=model_name, ready=True)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    response_model=OipModelReady,
    responses={**_UNKNOWN, **_NOT_READY},
    summary="Model ready (a given version)",
)
async def model_version_ready(
    request: Request, model_name: str, model_version: str
) -> OipModelReady:
    request.state.served = dataplane_of(request).resolve(model_name, model_version)[0]
    return OipModelReady(name=model_name, ready=True)
