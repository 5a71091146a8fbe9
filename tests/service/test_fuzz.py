"""Schemathesis fuzzes every operation of the OpenAPI schema, valid and invalid data alike.

Fails on any server error, any response that does not match the schema, and any status code
the schema does not document.
"""

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.app import create_app
from service.repository import load_repository
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL

pytestmark = pytest.mark.slow  # about a minute
# Several hundred examples in all: 7 operations, positive and negative data.
MAX_EXAMPLES = 100

_app = create_app(
    Settings(model_dir=DEFAULT_MODEL, max_batch=50), repository=load_repository(DEFAULT_MODEL)[0]
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
)


# The OIP request schema cannot say that an input's data holds shape[0] x 64 numbers in
# [0, 16], nor which input name each model takes (it is the protocol's generic schema), so a
# schema-valid OIP request is usually refused with 400. Every other check (no 500, documented
# statuses, answers matching the schema) still runs on it; tests/service/test_oip.py sends
# valid requests.
_OIP_INFER = "/v2/models/{model_name}"


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
def test_api_contract(case):
    excluded = []
    if case.operation.path.startswith(_OIP_INFER) and case.operation.path.endswith("/infer"):
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)
