"""Request and response shapes: the OpenAPI contract and the precise (slow-path) validator."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.artifact import N_FEATURES, PIXEL_MAX

__all__ = [
    "LATENT_LIMIT",
    "LATENT_RANGE",
    "PIXEL_RANGE",
    "DecodeRequest",
    "DecodeResponse",
    "EncodeRequest",
    "EncodeResponse",
    "ErrorResponse",
    "Health",
    "ModelInfo",
    "ReconstructRequest",
    "ReconstructResponse",
    "ReferenceResponse",
]

# Latent codes of real digits lie within a few units of 0; this bound only keeps arithmetic
# in the decoder finite (no inf - inf) for absurd inputs.
LATENT_LIMIT = 1e6
# The valid ranges: the one definition, read by these models and by service.operations.
PIXEL_RANGE = (0.0, PIXEL_MAX)
LATENT_RANGE = (-LATENT_LIMIT, LATENT_LIMIT)

Pixel = Annotated[
    float, Field(strict=True, ge=PIXEL_RANGE[0], le=PIXEL_RANGE[1], allow_inf_nan=False)
]
Vector = Annotated[list[Pixel], Field(min_length=N_FEATURES, max_length=N_FEATURES)]
Coordinate = Annotated[
    float, Field(strict=True, ge=LATENT_RANGE[0], le=LATENT_RANGE[1], allow_inf_nan=False)
]
Code = Annotated[list[Coordinate], Field(min_length=2, max_length=2)]

_EXAMPLE_VECTOR = [
    0, 1, 6, 15, 12, 1, 0, 0, 0, 7, 16, 6, 6, 10, 0, 0, 0, 8, 16, 2, 0, 11, 2, 0, 0, 5, 16, 3, 0,
    5, 7, 0, 0, 7, 13, 3, 0, 8, 7, 0, 0, 4, 12, 0, 1, 13, 5, 0, 0, 0, 14, 9, 15, 9, 0, 0, 0, 0, 6,
    14, 7, 1, 0, 0,
]  # fmt: skip
_EXAMPLE_CODE = [0.42, -0.17]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncodeRequest(_Strict):
    """Pixel vectors to encode: each 64 numbers in [0, 16], row-major 8×8."""

    vectors: list[Vector] = Field(min_length=1, examples=[[_EXAMPLE_VECTOR]])


class ReconstructRequest(EncodeRequest):
    """Pixel vectors to reconstruct: each 64 numbers in [0, 16], row-major 8×8."""


class DecodeRequest(_Strict):
    """Latent codes to decode: each 2 finite numbers."""

    latent: list[Code] = Field(min_length=1, examples=[[_EXAMPLE_CODE]])


class EncodeResponse(BaseModel):
    latent: list[list[float]] = Field(description="One (z1, z2) per input vector.")


class DecodeResponse(BaseModel):
    vectors: list[list[float]] = Field(description="One 64-pixel vector in [0, 16] per code.")


class ReconstructResponse(BaseModel):
    vectors: list[list[float]] = Field(description="decode(encode(x)) for each input vector.")
    errors: list[float] = Field(
        description="Mean squared reconstruction error per vector, in scaled [0, 1] units; "
        "an anomaly score (real digits score low, scribbles high)."
    )
    is_outlier: list[bool] = Field(
        description="Whether each vector is an outlier: its error above `threshold` or its "
        "distance above `distance_threshold`."
    )
    distances: list[float] = Field(
        description="Mean squared distance per vector to the nearest of the model's prototypes "
        "(typical training digits, k-means centres), in scaled [0, 1] units: the second "
        "anomaly score, which finds shifted digits the reconstruction error misses."
    )
    threshold: float = Field(
        description="The model's calibrated error threshold (DIGITCODE_OUTLIER_QUANTILE of "
        "the errors of held-out digits, bounded with 95 % confidence)."
    )
    distance_threshold: float = Field(
        description="The model's calibrated distance threshold, by the same rule."
    )
    feature_scores: list[list[float]] | None = Field(
        None,
        description="With `?feature_scores=true`: each vector's 64 squared pixel errors (scaled "
        "units), whose mean is its error.",
    )


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(
        description="Where the problem is, e.g. body, vectors, row, column."
    )
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem] | str


class Health(BaseModel):
    status: str


class ModelInfo(BaseModel):
    """The served artifact's manifest (public fields)."""

    model_config = ConfigDict(extra="allow")

    model_version: str
    format_version: int
    preset: str | None = None
    layer_sizes: list[int]
    activation: str
    latent_layer: int
    weights_sha256: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


class ReferenceResponse(BaseModel):
    """The artifact's reference sample: validation rows and their digits."""

    vectors: list[list[int]] = Field(description="Pixel vectors, 64 whole numbers in [0, 16].")
    labels: list[int] = Field(description="The digit (0..9) each vector is.")


# -- The Open Inference Protocol (KServe V2), for the OpenAPI document and the metadata routes.

Parameters = dict[str, str | int | float | bool]


class OipError(BaseModel):
    """The protocol's error answer."""

    error: str


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipLive(BaseModel):
    live: bool


class OipReady(BaseModel):
    ready: bool


class OipModelReady(BaseModel):
    name: str
    ready: bool


class OipTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for the batch dimension.")


class OipModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[OipTensorMetadata]
    outputs: list[OipTensorMetadata]
    parameters: Parameters = Field(default_factory=dict)


class OipRequestInput(BaseModel):
    name: str = Field(examples=["vectors"])
    shape: list[int] = Field(examples=[[1, 64]])
    datatype: str = Field(examples=["FP32"], description="FP32 or FP64.")
    parameters: Parameters | None = Field(
        None, description="`binary_data_size`: the tensor's bytes follow the JSON."
    )
    data: list[Any] | None = Field(
        None, description="Row-major numbers, nested or flat.", examples=[_EXAMPLE_VECTOR]
    )


class OipRequestOutput(BaseModel):
    name: str = Field(examples=["latent"])
    parameters: Parameters | None = Field(
        None, description="`binary_data`: true to get the output as bytes after the JSON."
    )


class OipInferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = Field(
        None, description="`binary_data_output`: true to get every output as bytes."
    )
    inputs: list[OipRequestInput] = Field(min_length=1)
    outputs: list[OipRequestOutput] | None = None


class OipResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float] | None = None


class OipInferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[OipResponseOutput]
