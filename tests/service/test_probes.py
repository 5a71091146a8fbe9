import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_loaded(client, default_model):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["x-model-version"] == default_model.version


@pytest.mark.anyio
async def test_readyz_is_503_before_the_model_is_loaded():
    # ASGITransport does not run the lifespan: the app is up but has no model yet.
    app = create_app(Settings(model_dir=DEFAULT_MODEL))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        ready = await c.get("/readyz")
        alive = await c.get("/healthz")
        encode = await c.post("/encode", json={"vectors": [[0] * 64]})
    assert ready.status_code == 503
    assert ready.json() == {"detail": "Model not loaded yet"}
    assert ready.headers["x-model-version"] == "none"
    assert alive.status_code == 200
    assert encode.status_code == 503


def test_model_returns_manifest(client, default_model):
    info = client.get("/model").json()
    assert info["model_version"] == default_model.version
    assert info["layer_sizes"][0] == 64 and info["layer_sizes"][-1] == 64
    assert info["layer_sizes"][info["latent_layer"]] == 2
    assert info["training"]["data_file"] == "optdigits.tra"
    assert 0 < info["metrics"]["validation_mse"] < info["metrics"]["validation_mse_pca2"]


def test_every_response_carries_model_version(client, default_model):
    for response in (
        client.get("/healthz"),
        client.get("/nope"),
        client.post("/encode", content=b"{", headers={"content-type": "application/json"}),
    ):
        assert response.headers["x-model-version"] == default_model.version


def test_openapi_documents_bodies_and_examples(client):
    schema = client.get("/openapi.json").json()
    for path, key in (("/encode", "vectors"), ("/decode", "latent"), ("/reconstruct", "vectors")):
        op = schema["paths"][path]["post"]
        body = op["requestBody"]["content"]["application/json"]
        name = body["schema"]["$ref"].rsplit("/", 1)[1]
        assert key in schema["components"]["schemas"][name]["properties"]
        assert len(body["example"][key][0]) == (2 if key == "latent" else 64)
        assert {"200", "413", "415", "422", "503"} <= set(op["responses"])
    assert client.get("/docs").status_code == 200


def test_openapi_examples_work(client):
    schema = client.get("/openapi.json").json()
    for path in ("/encode", "/decode", "/reconstruct"):
        example = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert client.post(path, json=example["example"]).status_code == 200
