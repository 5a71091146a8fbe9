"""Optional API key: required everywhere but the probes and docs when DIGITCODE_API_KEY is set.

The docs (``/docs``, ``/redoc``, their assets and ``/openapi.json``) are open so that a browser
can show them and the user enter the key there: ``tests/service/test_docs.py``.
"""

import logging

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL

KEY = "correct horse battery staple"


@pytest.fixture
def secured(default_repository):
    app = create_app(Settings(model_dir=DEFAULT_MODEL, api_key=KEY), repository=default_repository)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/encode"), ("POST", "/decode"), ("POST", "/reconstruct"), ("GET", "/model"),
     ("GET", "/metrics")],
)  # fmt: skip
@pytest.mark.parametrize(
    ("header", "word"), [(None, "Missing"), ("wrong", "Invalid"), ("", "Missing")]
)
def test_refused_without_the_right_key(secured, default_model, method, path, header, word):
    headers = {} if header is None else {"X-API-Key": header}
    response = secured.request(method, path, json={"vectors": [[0] * 64]}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": f"{word} API key: send it in the X-API-Key header"}
    assert response.headers["www-authenticate"] == 'APIKey header="X-API-Key"'
    assert response.headers["x-model-version"] == default_model.version


def test_served_with_the_key(secured):
    response = secured.post("/encode", json={"vectors": [[0] * 64]}, headers={"X-API-Key": KEY})
    assert response.status_code == 200
    assert len(response.json()["latent"]) == 1


def test_key_prefix_is_not_enough(secured):
    response = secured.get("/model", headers={"X-API-Key": KEY[:-1]})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_need_no_key(secured, path):
    assert secured.get(path).status_code == 200


def test_key_is_never_logged(default_repository, caplog):
    app = create_app(Settings(model_dir=DEFAULT_MODEL, api_key=KEY), repository=default_repository)
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        client.get("/model", headers={"X-API-Key": "guess"})
        client.get("/model", headers={"X-API-Key": KEY})
    assert KEY not in caplog.text and "guess" not in caplog.text
    assert KEY not in repr(Settings(api_key=KEY))


def test_openapi_declares_the_key(secured):
    schema = secured.get("/openapi.json", headers={"X-API-Key": KEY}).json()
    assert schema["components"]["securitySchemes"]["APIKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key"
    }  # fmt: skip
    assert schema["security"] == [{"APIKey": []}]
    assert "401" in schema["paths"]["/encode"]["post"]["responses"]
    assert schema["paths"]["/healthz"]["get"]["security"] == []


def test_no_key_configured_means_open(client):
    assert client.get("/model").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "401" not in schema["paths"]["/encode"]["post"]["responses"]


def test_empty_key_setting_means_no_key(monkeypatch):
    monkeypatch.setenv("DIGITCODE_API_KEY", "")
    assert Settings().api_key is None
