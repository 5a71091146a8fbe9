"""The one table of operations: what each reads, computes and returns, its limits, its paths.

Two kinds of model are served for every artifact (the Open Inference Protocol's view):

``<name>`` (:data:`AUTOENCODER`)
    input ``vectors`` ``[n, 64]`` pixels 0..16; outputs ``latent`` ``[n, 2]``,
    ``reconstruction`` ``[n, 64]`` and ``error`` ``[n]``. Only the layers the requested outputs
    need are computed: ``latent`` alone is an encode.
``<name>-decoder`` (:data:`DECODER`)
    input ``latent`` ``[n, 2]``; output ``vectors`` ``[n, 64]``.

The native endpoints are views of the same signatures (:data:`NATIVE`): ``/encode`` is the
autoencoder's ``latent``, ``/reconstruct`` its ``reconstruction`` and ``error``, ``/decode`` the
decoder. Routing, the OpenAPI document, metric labels, the API-key and concurrency middleware
and the error format all read this module; adding an operation is a change here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import cast

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from service.artifact import N_FEATURES
from service.errors import RequestError
from service.model import Autoencoder
from service.schemas import (
    LATENT_RANGE,
    PIXEL_RANGE,
    DecodeRequest,
    DecodeResponse,
    EncodeRequest,
    EncodeResponse,
    ReconstructRequest,
    ReconstructResponse,
)

__all__ = [
    "AUTOENCODER",
    "CODES",
    "DECODER",
    "DECODER_SUFFIX",
    "DOCS_ASSETS",
    "DOCS_ASSETS_PREFIX",
    "DOCS_PATHS",
    "DOCS_URL",
    "EXPLORER_ASSETS",
    "EXPLORER_ASSETS_PREFIX",
    "EXPLORER_URL",
    "NATIVE",
    "OIP_INFER",
    "OPENAPI_URL",
    "PAGE_PATHS",
    "PROBE_PATHS",
    "REDOC_URL",
    "SIGNATURES",
    "VECTORS",
    "MatrixSpec",
    "NativeOperation",
    "Output",
    "Signature",
    "check_values",
    "endpoint_label",
    "in_range",
    "too_many_rows",
]

# float32 or float64 as sent; typed float64 like service.model (float32 behaves the same).
Array = NDArray[np.float64]


@dataclass(frozen=True)
class MatrixSpec:
    """An input: ``key`` rows of ``width`` numbers in [lo, hi]; ``model`` checks its JSON.

    ``hint`` explains a common mistake: ``(max_seen, text)`` adds ``text`` to a range error
    when every value lies in [lo, max_seen].
    """

    key: str
    width: int
    lo: float
    hi: float
    model: type[BaseModel]
    hint: tuple[float, str] | None = None


VECTORS = MatrixSpec(
    "vectors",
    N_FEATURES,
    *PIXEL_RANGE,
    EncodeRequest,
    hint=(
        255.0,
        "these look like 8-bit pixels (0..255): the model takes optdigits counts, 0..16 "
        "(the number of set pixels in each 4x4 block of a 32x32 bitmap; 0..255 pixels "
        "divided by 16 are close)",
    ),
)
CODES = MatrixSpec("latent", 2, *LATENT_RANGE, DecodeRequest)


def too_many_rows(n: int, max_rows: int, loc: list[str | int]) -> RequestError:
    """413 for a batch of ``n`` rows (checked from declared shapes before converting)."""
    return RequestError.one(
        413, loc, f"Batch of {n} rows exceeds the limit of {max_rows} per request", "too_many_rows"
    )


def in_range(X: Array, spec: MatrixSpec) -> bool:
    """Whether every value of ``X`` is finite and within ``spec``'s range (False for NaN)."""
    return bool(X.min() >= spec.lo and X.max() <= spec.hi)


def check_values(X: Array, spec: MatrixSpec, loc: list[str | int]) -> None:
    """Raise 422 naming the first value of ``X`` (as sent) that is not finite in [lo, hi].

    ``loc`` locates the matrix in the request; the row and column are appended to it (and kept
    out of the message, so a client that renumbers rows of a split batch changes only ``loc``).
    """
    if in_range(X, spec):
        return
    bad = ~((spec.lo <= X) & (spec.hi >= X))
    row, col = (int(i) for i in np.argwhere(bad)[0])
    value = float(X[row, col])
    what = "is not finite" if not np.isfinite(value) else f"is outside [{spec.lo:g}, {spec.hi:g}]"
    msg = f"Value {value!r} {what}"
    if spec.hint is not None and X.min() >= spec.lo and X.max() <= spec.hint[0]:
        msg = f"{msg}: {spec.hint[1]}"
    raise RequestError.one(422, [*loc, row, col], msg, "value_error")


@dataclass(frozen=True)
class Output:
    """One output tensor: ``width`` numbers per row, or one (``width`` None).

    ``datatype`` is its OIP datatype, or None for the input's float type; ``default`` says
    whether an OIP request that names no outputs gets it.
    """

    name: str
    width: int | None
    description: str
    datatype: str | None = None
    default: bool = True

    def shape(self, n: int) -> list[int]:
        """The tensor's shape for ``n`` rows (-1: any number, as OIP metadata writes it)."""
        return [n] if self.width is None else [n, self.width]


Compute = Callable[[Autoencoder, Array, frozenset[str]], dict[str, Array]]


_LATENT_ONLY = frozenset({"latent"})


def _autoencoder(model: Autoencoder, X: Array, wanted: frozenset[str]) -> dict[str, Array]:
    if wanted == _LATENT_ONLY:
        return {"latent": model.encode(X)}
    f = model.forward(X)
    assert f.distances is not None  # the service loads only artifacts with prototypes
    return {
        "latent": f.latent,
        "reconstruction": f.reconstruction,
        "error": f.errors,
        "distance": f.distances,
        "feature_score": f.pixel_errors,
        # Every scored vector is counted as an outlier or not, whatever was asked for.
        "is_outlier": cast(Array, model.is_outlier(f.errors, f.distances)),  # typed as the rest
    }


def _decoder(model: Autoencoder, Z: Array, wanted: frozenset[str]) -> dict[str, Array]:
    return {"vectors": model.decode(Z)}


@dataclass(frozen=True)
class Signature:
    """What one kind of model reads and returns, and how it computes the outputs asked for."""

    suffix: str  # appended to the repository's model name: "" or "-decoder"
    input: MatrixSpec
    outputs: tuple[Output, ...]
    compute: Compute

    @cached_property
    def output_names(self) -> frozenset[str]:
        return frozenset(o.name for o in self.outputs)

    def output(self, name: str) -> Output:
        return next(o for o in self.outputs if o.name == name)


AUTOENCODER = Signature(
    "",
    VECTORS,
    (
        Output("latent", 2, "The 2-D latent code of each vector."),
        Output("reconstruction", N_FEATURES, "decode(encode(x)), pixels in [0, 16]."),
        Output("error", None, "Mean squared reconstruction error per vector (scaled units)."),
        Output(
            "distance",
            None,
            "Mean squared distance to the nearest of the model's prototypes, typical training "
            "digits (scaled units).",
        ),
        Output(
            "is_outlier",
            None,
            "Whether the error or the distance is above the model's calibrated threshold for it.",
            datatype="BOOL",
        ),
        Output(
            "feature_score",
            N_FEATURES,
            "Squared error of each pixel (scaled units); their mean is the error.",
            default=False,
        ),
    ),
    _autoencoder,
)
DECODER_SUFFIX = "-decoder"
DECODER = Signature(
    DECODER_SUFFIX,
    CODES,
    (Output("vectors", N_FEATURES, "The pixel vector decoded from each code."),),
    _decoder,
)
# Every repository model <name> is served as the OIP models <name> + suffix, one per signature.
SIGNATURES = (AUTOENCODER, DECODER)


@dataclass(frozen=True)
class NativeOperation:
    """A native endpoint: a signature, and which outputs it answers under which JSON keys.

    The ``.npy`` answer stacks the answered outputs as columns, in this order (booleans as
    0 and 1). ``npy_layouts[v - 1]`` is how many of them layout ``v`` has: layout 1 (the
    default) what the endpoint answered before outputs were added, layout 2 (``Accept:
    application/x-npy; version=2``) more; no entry: one layout with them all. ``optional``
    outputs are answered (after the others, in every layout) when the request's query names
    them: ``?feature_scores=true``.
    """

    path: str
    summary: str
    signature: Signature
    answer: tuple[tuple[str, str], ...]  # (JSON key, signature output)
    request_model: type[BaseModel]
    response_model: type[BaseModel]
    optional: tuple[tuple[str, str], ...] = ()
    npy_layouts: tuple[int, ...] = ()

    @cached_property
    def wanted(self) -> frozenset[str]:
        return frozenset(output for _, output in self.answer)

    def npy_answer(
        self, version: int = 1, optional: tuple[tuple[str, str], ...] = ()
    ) -> tuple[tuple[str, str], ...]:
        """The outputs in the ``.npy`` answer's columns, in layout ``version`` (1 or 2)."""
        count = self.npy_layouts[version - 1] if self.npy_layouts else len(self.answer)
        return self.answer[:count] + optional

    def npy_width(self, version: int = 1, optional: bool = False) -> int:
        """Columns of the ``.npy`` answer in layout ``version``, with the optional outputs."""
        answered = self.npy_answer(version, self.optional if optional else ())
        return sum(self.signature.output(o).width or 1 for _, o in answered)


NATIVE: dict[str, NativeOperation] = {
    op.path: op
    for op in (
        NativeOperation(
            "/encode",
            "Encode pixel vectors to 2-D latent codes",
            AUTOENCODER,
            (("latent", "latent"),),
            EncodeRequest,
            EncodeResponse,
        ),
        NativeOperation(
            "/decode",
            "Decode 2-D latent codes to pixel vectors",
            DECODER,
            (("vectors", "vectors"),),
            DecodeRequest,
            DecodeResponse,
        ),
        NativeOperation(
            "/reconstruct",
            "Reconstruct pixel vectors and score each by its reconstruction error",
            AUTOENCODER,
            (
                ("vectors", "reconstruction"),
                ("errors", "error"),
                ("is_outlier", "is_outlier"),
                ("distances", "distance"),
            ),
            ReconstructRequest,
            ReconstructResponse,
            optional=(("feature_scores", "feature_score"),),
            npy_layouts=(2, 3),  # distances only in JSON
        ),
    )
}

# POST /v2/models/{model}[/versions/{version}]/infer
OIP_INFER = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
_OIP_MODEL = re.compile(r"/v2/models/[^/]+(?P<versioned>/versions/[^/]+)?(?P<rest>/ready|/infer)?")

# Orchestrators must reach these without credentials, and even when the service is saturated.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})
_FIXED_PATHS = frozenset({*NATIVE, *PROBE_PATHS, "/model", "/reference", "/metrics", "/v2"})

# The API docs: the two pages, the schema they read and the assets they load (served from
# service/static/docs, nothing from another host). Readable without the API key, so that a
# browser can show them and the user enter the key in Swagger UI; unlike the probes they count
# towards the concurrency limit.
DOCS_URL, REDOC_URL, OPENAPI_URL = "/docs", "/redoc", "/openapi.json"
DOCS_ASSETS_PREFIX = "/docs/assets/"
DOCS_ASSETS = frozenset(
    {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "redoc.standalone.js"}
)
DOCS_PATHS = frozenset(
    {DOCS_URL, REDOC_URL, OPENAPI_URL, *(DOCS_ASSETS_PREFIX + name for name in DOCS_ASSETS)}
)
# The explorer page (service/static/explorer) at the root, and its two assets. Public like the
# docs: the page asks for the key and sends it with its API calls, which need it.
EXPLORER_URL = "/"
EXPLORER_ASSETS_PREFIX = "/explorer/"
EXPLORER_ASSETS = frozenset({"explorer.js", "explorer.css"})
PAGE_PATHS = DOCS_PATHS | {EXPLORER_URL, *(EXPLORER_ASSETS_PREFIX + n for n in EXPLORER_ASSETS)}


def endpoint_label(path: str) -> str:
    """The metrics label for ``path``: the path itself, an OIP route template, or ``other``.

    Bounded: model names and versions go in their own labels, never in this one.
    """
    if path in _FIXED_PATHS:
        return path
    match = _OIP_MODEL.fullmatch(path)
    if match is None:
        return "other"
    base = "/v2/models/{model}" + ("/versions/{version}" if match["versioned"] else "")
    return base + (match["rest"] or "")
