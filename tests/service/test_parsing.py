"""The JSON fast path (simdjson) accepts exactly the bodies whose structure the precise path
(pydantic) accepts, with the same values; the values' range is the data plane's check."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import RequestError
from service.operations import CODES, VECTORS, MatrixSpec, check_values
from service.parsing import _fast_matrix, parse_json

# EncodeRequest's pixel type without its range: the structure the fast path must agree on.
_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _SmallRequest(BaseModel):
    """EncodeRequest's structure with 3 pixels per row: short examples, same rules."""

    model_config = ConfigDict(extra="forbid")
    vectors: list[Annotated[list[_Number], Field(min_length=3, max_length=3)]] = Field(min_length=1)


SMALL = MatrixSpec("vectors", 3, 0.0, 16.0, _SmallRequest)


def _precise(body: bytes, spec: MatrixSpec) -> np.ndarray | None:
    """What the pydantic models make of a body: its matrix, or None when they refuse it."""
    try:
        parsed = spec.model.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None
    return np.asarray(getattr(parsed, spec.key), dtype=np.float64).reshape(-1, spec.width)


def _agree(body: bytes, spec: MatrixSpec) -> np.ndarray | None:
    """Assert the fast path never accepts what the models refuse, nor differs in a value."""
    fast = _fast_matrix(body, spec, max_rows=10_000)
    if fast is not None:
        precise = _precise(body, spec)
        assert precise is not None, body
        np.testing.assert_array_equal(fast, precise)
        assert np.signbit(fast).tolist() == np.signbit(precise).tolist()  # -0.0 stays -0.0
    return fast


def test_common_client_encodings_take_the_fast_path(sample_rows):
    for body in (
        orjson.dumps({"vectors": sample_rows.tolist()}),  # the Python client, floats
        json.dumps({"vectors": sample_rows.astype(int).tolist()}).encode(),  # spaces, integers
        json.dumps({"vectors": sample_rows.tolist()}, indent=2).encode(),  # newlines
    ):
        fast = _agree(body, VECTORS)
        assert fast is not None and fast.shape == (10, 64)
        np.testing.assert_array_equal(fast, sample_rows)


@pytest.mark.parametrize(
    "body",
    [
        b'{"vectors": [[1, [2], 3], [4, 5, 6]]}',  # a one-number array inside a row
        b'{"vectors": [[1, [], 2, 3], [4, [5, 6]]]}',  # nesting that keeps the total at 2 x 3
        b'{"vectors": [[1, 2], [3, 4, 5, 6]]}',  # ragged rows with the right total
        b'{"vectors": [[1, 2, 3], 4]}',
        b'{"vectors": [[1, "2", 3]]}',
        b'{"vectors": [[1, true, 3]]}',
        b'{"vectors": [[1, null, 3]]}',
        b'{"vectors": [[1, {}, 3]]}',
        b'{"vectors": [[1, 2, 3]], "extra": 1}',
        b'{"vectors": [[1, 2, 3]], "vectors": [[4, 5, 99]]}',  # the last one counts (99)
        b'{"vectors": [[1, 2, 1e400]]}',
        b'{"vectors": [[1, 2, NaN]]}',
        b'{"vectors": [[1, 2, 03]]}',
        b'{"vectors": [[1, 2, 3],]}',
        b'{"vectors": []}',
        b'{"vectors": [[1, 2, 3]]',
        b"[[1, 2, 3]]",
        b'\xef\xbb\xbf{"vectors": [[1, 2, 3]]}',  # simdjson skips a BOM, JSON does not
    ],
)
def test_the_fast_path_leaves_these_to_the_precise_path(body):
    assert _agree(body, SMALL) is None


def test_an_escaped_key_means_the_same_key():
    body = b'{"\\u0076ectors": [[1, 2, 3]]}'
    fast = _agree(body, SMALL)
    assert fast is not None and fast.tolist() == [[1.0, 2.0, 3.0]]


def test_a_kept_413_does_not_block_the_next_request():
    # Error trackers keep exceptions (and their frames) alive; the parser must still work.
    too_many = orjson.dumps({"vectors": [[1, 2, 3]] * 11})
    with pytest.raises(RequestError) as kept:
        _fast_matrix(too_many, SMALL, max_rows=10)
    fast = _fast_matrix(b'{"vectors": [[1, 2, 3]]}', SMALL, max_rows=10)
    assert kept.value.status_code == 413
    assert fast is not None and fast.tolist() == [[1.0, 2.0, 3.0]]


def test_too_many_rows_is_refused_without_converting():
    body = orjson.dumps({"latent": [[0.0, 0.0]] * 11})
    with pytest.raises(RequestError) as info:
        _fast_matrix(body, CODES, max_rows=10)
    assert info.value.status_code == 413
    detail = info.value.detail
    assert isinstance(detail, list) and detail[0]["loc"] == ["body", "latent"]
    with pytest.raises(RequestError, match="exceeds the limit of 10"):
        parse_json(body, CODES, max_rows=10)


_numbers = st.one_of(
    st.integers(min_value=-3, max_value=20),
    st.floats(min_value=-1.0, max_value=17.0, allow_nan=False),
    st.sampled_from([0.0, -0.0, 16.0, 1e-300, 5e-324]),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(_numbers, min_size=2, max_size=4), min_size=1, max_size=4),
    spaced=st.booleans(),
)
def test_generated_bodies_agree_with_the_precise_path(rows, spaced):
    body = json.dumps({"vectors": rows}).encode() if spaced else orjson.dumps({"vectors": rows})
    fast = _agree(body, SMALL)
    well_formed = all(len(r) == 3 for r in rows)
    assert (fast is not None) == well_formed


@settings(max_examples=300, deadline=None)
@given(
    base=st.lists(st.lists(st.integers(0, 16), min_size=3, max_size=3), min_size=1, max_size=3),
    at=st.integers(min_value=0),
    insert=st.sampled_from(["[", "]", ",", "-", ".", "e", "0", " ", '"', "}", "1e5", "[]"]),
)
def test_mutated_bodies_are_never_accepted_wrongly(base, at, insert):
    body = orjson.dumps({"vectors": base})
    at = at % (len(body) + 1)
    _agree(body[:at] + insert.encode() + body[at:], SMALL)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (17.0, "Value 17.0 is outside [0, 16]"),
        (-0.5, "Value -0.5 is outside [0, 16]"),
        (np.nan, "Value nan is not finite"),
        (np.inf, "Value inf is not finite"),
    ],
)
def test_values_are_checked_by_the_data_plane(value, fragment):
    body = orjson.dumps({"vectors": [[1, 1, 1], [1, 2, 3]]})
    X = _fast_matrix(body, SMALL, 10)
    assert X is not None
    check_values(X, SMALL, ["body", "vectors"])  # in range: nothing to say
    X[1, 2] = value
    with pytest.raises(RequestError) as info:
        check_values(X, SMALL, ["body", "vectors"])
    assert info.value.status_code == 422
    assert info.value.detail == [
        {"loc": ["body", "vectors", 1, 2], "msg": fragment, "type": "value_error"}
    ]
