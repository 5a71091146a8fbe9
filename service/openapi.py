"""The OpenAPI document: FastAPI's routes plus the inference endpoints from the one table.

The inference endpoints are answered below FastAPI (:mod:`service.endpoints`), so their
entries are written here from :mod:`service.operations`, with every body they accept (JSON,
``.npy``, the OIP binary extension) and every status they answer; the middleware's 401 and 503
are added to every operation that can give them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from service.middleware import API_KEY_HEADER
from service.operations import NATIVE, PROBE_PATHS, NativeOperation
from service.parsing import JSON_TYPE, NPY_TYPE
from service.protocols.oip import HEADER_LENGTH
from service.schemas import ErrorResponse, OipError, OipInferenceRequest, OipInferenceResponse

__all__ = ["build_openapi"]

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REF = "#/components/schemas/{model}"


def _ref(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _errors(
    schemas: dict[str, Any], model: type[BaseModel], statuses: dict[int, str]
) -> dict[str, Any]:
    ref = _ref(schemas, model)
    return {
        str(status): {"description": text, "content": {"application/json": {"schema": ref}}}
        for status, text in statuses.items()
    }


def _native(op: NativeOperation, schemas: dict[str, Any]) -> dict[str, Any]:
    spec = op.signature.input
    example = {
        name: field.examples[0]
        for name, field in op.request_model.model_fields.items()
        if field.examples
    }
    in_shape, out_width = f"(n, {spec.width})", op.npy_width()
    npy_answer = (
        f"a `.npy` array of shape (n, {out_width}) in the request's float type (columns: "
        f"{', '.join(key for key, _ in op.npy_answer(1))}"
    )
    if len(op.npy_layouts) > 1:
        npy_answer += (
            f"); with `Accept: {NPY_TYPE}; version=2`, shape (n, {op.npy_width(2)}) (columns: "
            f"{', '.join(key for key, _ in op.npy_answer(2))}, booleans as 0 and 1"
        )
    if op.optional:
        names = ", ".join(f"`{key}`" for key, _ in op.optional)
        npy_answer += f"; then {names} when the query asks for them"
    npy_answer += ")"
    query = [
        {
            "name": key,
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": op.signature.output(output).description,
        }
        for key, output in op.optional
    ]
    return {
        "post": {
            "tags": ["inference"],
            "summary": op.summary,
            "operationId": op.path.strip("/"),
            **({"parameters": query} if query else {}),
            "requestBody": {
                "required": True,
                "description": f"JSON as below, or a `.npy` float32/float64 array of shape "
                f"{in_shape} sent as `{NPY_TYPE}`.",
                "content": {
                    JSON_TYPE: {"schema": _ref(schemas, op.request_model), "example": example},
                    NPY_TYPE: _BINARY,
                },
            },
            "responses": {
                "200": {
                    "description": f"JSON, or with `Accept: {NPY_TYPE}` {npy_answer}.",
                    "content": {
                        JSON_TYPE: {"schema": _ref(schemas, op.response_model)},
                        NPY_TYPE: _BINARY,
                    },
                },
                **_errors(
                    schemas,
                    ErrorResponse,
                    {
                        400: "The client disconnected before sending the whole body.",
                        413: "Body or batch larger than the limits.",
                        415: "Content-Type is neither JSON nor .npy.",
                        422: "Body is not valid; `loc` says where.",
                    },
                ),
            },
        }
    }


def _oip_infer(versioned: bool, schemas: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "model_name",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "example": "digitcode",
            "description": "`<model>` (encoder and reconstruction) or `<model>-decoder`.",
        }
    ]
    if versioned:
        parameters.append(
            {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    parameters.append(
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": "Length of the JSON part when binary tensor data follows it.",
        }
    )
    request = _ref(schemas, OipInferenceRequest)
    return {
        "post": {
            "tags": ["open inference protocol"],
            "summary": "Inference (Open Inference Protocol)"
            + (", a given version" if versioned else ", the newest version"),
            "operationId": "oip_infer_version" if versioned else "oip_infer",
            "parameters": parameters,
            "requestBody": {
                "required": True,
                "description": "The inference request; with the binary tensor extension the "
                f"JSON is followed by the tensors' bytes and `{HEADER_LENGTH}` gives its length. "
                "No Content-Type is needed.",
                "content": {JSON_TYPE: {"schema": request}, "application/octet-stream": _BINARY},
            },
            "responses": {
                "200": {
                    "description": "The outputs; with binary outputs the JSON is followed by "
                    f"their bytes and `{HEADER_LENGTH}` gives its length.",
                    "content": {
                        JSON_TYPE: {"schema": _ref(schemas, OipInferenceResponse)},
                        "application/octet-stream": _BINARY,
                    },
                },
                **_errors(
                    schemas,
                    OipError,
                    {
                        400: "The request is not valid; the message says what and where.",
                        404: "Unknown model or version.",
                        413: "Body or batch larger than the limits.",
                    },
                ),
            },
        }
    }


def build_openapi(application: FastAPI, api_key: bool) -> dict[str, Any]:
    """The whole document, cached on ``application``."""
    if application.openapi_schema:
        return application.openapi_schema
    schema = get_openapi(
        title=application.title,
        version=application.version,
        summary=application.summary,
        description=application.description,
        routes=application.routes,
    )
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    paths = schema.setdefault("paths", {})
    for path, op in NATIVE.items():
        paths[path] = _native(op, schemas)
    paths["/v2/models/{model_name}/infer"] = _oip_infer(False, schemas)
    paths["/v2/models/{model_name}/versions/{model_version}/infer"] = _oip_infer(True, schemas)
    native_errors, oip_errors = _ref(schemas, ErrorResponse), _ref(schemas, OipError)
    for path, operations in paths.items():
        ref = oip_errors if path.startswith("/v2") else native_errors
        for operation in operations.values():
            if path in PROBE_PATHS:
                operation["security"] = []
                continue
            responses = operation["responses"]
            responses.setdefault(
                "503",
                {
                    "description": "Model not loaded yet, or too many requests in flight; "
                    "retry shortly.",
                    "content": {JSON_TYPE: {"schema": ref}},
                },
            )
            if api_key:
                responses.setdefault(
                    "401",
                    {
                        "description": f"Missing or invalid {API_KEY_HEADER} header.",
                        "content": {JSON_TYPE: {"schema": ref}},
                    },
                )
    if api_key:
        schema["components"].setdefault("securitySchemes", {})["APIKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": API_KEY_HEADER,
        }
        schema["security"] = [{"APIKey": []}]
    application.openapi_schema = schema
    return schema
