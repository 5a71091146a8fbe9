"""Schemathesis fuzzes every operation of the OpenAPI schema, valid and invalid data alike.

Fails on any server error, any response that does not match the schema, and any status code
the schema does not document.
"""

import pytest
import schemathesis
from schemathesis import GenerationMode

from service.app import create_app
from service.model import Autoencoder
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL

# Several hundred examples in all: 7 operations, positive and negative data.
MAX_EXAMPLES = 100

_app = create_app(
    Settings(model_dir=DEFAULT_MODEL, max_batch=50), model=Autoencoder.from_dir(DEFAULT_MODEL)
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
)


@pytest.mark.filterwarnings("ignore")
@schema.parametrize()
def test_api_contract(case):
    case.call_and_validate()
