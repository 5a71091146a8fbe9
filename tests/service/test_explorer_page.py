"""The explorer page's server side: ``GET /``, its two assets and ``GET /reference``.

What the page does in a browser is tested in ``test_explorer.py`` (``make browser-test``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np

import service
from service.artifact import load_artifact
from service.operations import EXPLORER_ASSETS, EXPLORER_ASSETS_PREFIX
from tests.conftest import API_KEY, DEFAULT_MODEL
from tests.service.test_docs import references

KEY = API_KEY
STATIC = Path(service.__file__).resolve().parent / "static" / "explorer"
TYPES = {
    "script": "text/javascript",
    "stylesheet": "text/css",
    "icon": "image/png",
    "a": "text/html",
}


def test_the_page_and_everything_it_loads_come_from_the_service(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert re.search(r"(?i)(?:https?:)?//", html) is None  # no other host, no CDN
    urls = references(html)
    assert {kind for kind, _ in urls} == {"script", "stylesheet", "icon", "a"}
    for kind, url in urls:
        # Relative, so that the page works under a proxy's path prefix (root_path).
        assert urlsplit(url).scheme == "" and not url.startswith("/"), url
        asset = client.get(urljoin("/", url))
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] == TYPES[kind], url
        if url.startswith("explorer/"):
            assert asset.content == (STATIC / url.removeprefix("explorer/")).read_bytes()
            assert asset.headers["x-content-type-options"] == "nosniff"
    # The module fetches only relative paths of this service's API.
    script = (STATIC / "explorer.js").read_text()
    hosts = set(re.findall(r"https?://[^\s\"'`]+", script)) - {"http://www.w3.org/2000/svg"}
    assert hosts == set()
    assert set(re.findall(r'(?:api|inChunks)\("(\w+)"', script)) == {
        "model",
        "reference",
        "encode",
        "reconstruct",
        "decode",
    }


def test_the_page_keeps_the_browser_on_this_host(client):
    policy = client.get("/").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    for name in ("default-src", "script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"


def test_only_the_listed_assets_are_served(client):
    assert sorted(EXPLORER_ASSETS) == sorted(
        p.name for p in STATIC.iterdir() if p.suffix != ".html"
    )
    for name in ("index.html", "nope.js", "..%2Fapp.py"):
        assert client.get(EXPLORER_ASSETS_PREFIX + name).status_code == 404, name


def test_reference_is_the_artifacts_labelled_sample(client):
    body = client.get("/reference").json()
    reference = load_artifact(DEFAULT_MODEL).reference
    assert reference is not None
    assert body["vectors"] == reference.vectors.tolist()
    assert body["labels"] == reference.labels.tolist()
    assert len(body["labels"]) == 574 and set(body["labels"]) == set(range(10))
    assert np.array(body["vectors"]).min() == 0 and np.array(body["vectors"]).max() == 16


def test_with_an_api_key_the_page_is_public_and_its_data_is_not(secured):
    for path in ("/", *(EXPLORER_ASSETS_PREFIX + name for name in EXPLORER_ASSETS)):
        assert secured.get(path).status_code == 200, path
    assert secured.get("/reference").status_code == 401
    assert secured.get("/reference", headers={"X-API-Key": KEY}).status_code == 200
