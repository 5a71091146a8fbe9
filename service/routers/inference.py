"""``/encode``, ``/decode`` and ``/reconstruct``: batches of arrays in, batches of arrays out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from service.dependencies import get_model, read_body, require_json, settings_of
from service.parsing import JSON_TYPE, dump_json, parse_codes, parse_vectors
from service.schemas import (
    DecodeRequest,
    DecodeResponse,
    EncodeRequest,
    EncodeResponse,
    ErrorResponse,
    ReconstructRequest,
    ReconstructResponse,
)

__all__ = ["router"]

router = APIRouter(tags=["inference"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Body or batch larger than the limits."},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json."},
    422: {"model": ErrorResponse, "description": "Body is not valid; `loc` says where."},
    503: {"model": ErrorResponse, "description": "Model not loaded yet."},
}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    # The handlers read the raw body (fast parsing, size limit while streaming), so FastAPI
    # cannot infer the request schema: declare it from the same model the slow path validates.
    schema = model.model_json_schema()
    example = {
        name: field.examples[0] for name, field in model.model_fields.items() if field.examples
    }
    return {
        "requestBody": {
            "required": True,
            "content": {JSON_TYPE: {"schema": schema, "example": example}},
        }
    }


def _json(content: dict[str, Any]) -> Response:
    return Response(content=dump_json(content), media_type=JSON_TYPE)


@router.post(
    "/encode",
    response_model=EncodeResponse,
    responses=_ERRORS,
    openapi_extra=_json_body(EncodeRequest),
    summary="Encode pixel vectors to 2-D latent codes",
)
async def encode(request: Request) -> Response:
    model = get_model(request)
    require_json(request)
    X = parse_vectors(await read_body(request), settings_of(request).max_batch)
    return _json({"latent": model.encode(X)})


@router.post(
    "/decode",
    response_model=DecodeResponse,
    responses=_ERRORS,
    openapi_extra=_json_body(DecodeRequest),
    summary="Decode 2-D latent codes to pixel vectors",
)
async def decode(request: Request) -> Response:
    model = get_model(request)
    require_json(request)
    Z = parse_codes(await read_body(request), settings_of(request).max_batch)
    return _json({"vectors": model.decode(Z)})


@router.post(
    "/reconstruct",
    response_model=ReconstructResponse,
    responses=_ERRORS,
    openapi_extra=_json_body(ReconstructRequest),
    summary="Reconstruct pixel vectors and score each by its reconstruction error",
)
async def reconstruct(request: Request) -> Response:
    model = get_model(request)
    require_json(request)
    X = parse_vectors(await read_body(request), settings_of(request).max_batch)
    X_hat, errors = model.reconstruct(X)
    return _json({"vectors": X_hat, "errors": errors})
