from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL


@pytest.fixture
def app(default_repository):
    # The model is passed in because ASGITransport does not run the lifespan that loads it.
    return create_app(
        Settings(model_dir=DEFAULT_MODEL, max_batch=40), repository=default_repository
    )


@pytest.fixture
def async_transport(app) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=app)


@contextmanager
def transport_into(app) -> Iterator[httpx.BaseTransport]:
    """A sync transport into ``app``: ASGITransport is async only, so hand requests to
    Starlette's TestClient (which runs the app in-process, without sockets)."""
    with TestClient(app) as test_client:

        def handler(request: httpx.Request) -> httpx.Response:
            answer = test_client.request(
                request.method, request.url.path, content=request.content, headers=request.headers
            )
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )

        yield httpx.MockTransport(handler)


@pytest.fixture
def sync_transport(app) -> Iterator[httpx.BaseTransport]:
    """A sync transport into the same app."""
    with transport_into(app) as transport:
        yield transport
