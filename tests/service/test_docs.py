"""The API docs work offline: ``/docs`` and ``/redoc`` load everything from the service.

Every URL the pages reference (stylesheet, scripts, favicon, the schema) is fetched from the app
and must be there; none may point to another host. With ``DIGITCODE_API_KEY`` set, the pages,
their assets and ``/openapi.json`` need no key (Swagger UI is where a browser user enters it),
while everything else still does.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import service
from service.operations import DOCS_ASSETS, DOCS_ASSETS_PREFIX, DOCS_PATHS, NATIVE
from tests.conftest import API_KEY

KEY = API_KEY
STATIC = Path(service.__file__).resolve().parent / "static" / "docs"
PAGES = ("/docs", "/redoc")


class _References(HTMLParser):
    """Every URL a page loads: ``src``, ``href``, ReDoc's ``spec-url`` and Swagger UI's ``url``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (what, url)
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self._in_script = tag == "script"
        for name in ("src", "href", "spec-url"):
            value = found.get(name)
            if value is not None:
                kind = "schema" if name == "spec-url" else found.get("rel") or tag
                self.urls.append((kind, value))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls += [("schema", url) for url in re.findall(r"\burl: '([^']*)'", data)]


def references(html: str) -> list[tuple[str, str]]:
    parser = _References()
    parser.feed(html)
    parser.close()
    return parser.urls


EXPECTED_TYPE = {
    "script": "text/javascript",
    "stylesheet": "text/css",
    "shortcut icon": "image/png",
    "schema": "application/json",
}


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_everything_from_the_service(client, page):
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No other host anywhere in the page: no CDN, no Google Fonts, not even protocol-relative.
    assert re.search(r"(?i)(?:https?:)?//", html) is None, html
    urls = references(html)
    kinds = {kind for kind, _ in urls}
    assert {"script", "schema"} <= kinds
    if page == "/docs":
        assert "stylesheet" in kinds
    for kind, url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        assert parts.path.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] == EXPECTED_TYPE[kind], url
        assert len(asset.content) > 0, url
        if kind != "schema":
            # Byte for byte the vendored file (whose provenance is checked below).
            assert parts.path.startswith(DOCS_ASSETS_PREFIX), url
            name = parts.path.removeprefix(DOCS_ASSETS_PREFIX)
            assert asset.content == (STATIC / name).read_bytes(), url
            assert asset.headers["x-content-type-options"] == "nosniff"


def test_swagger_ui_gets_its_operations_from_the_schema(client):
    html = client.get("/docs").text
    # The bundle defines what the page calls, and the schema it loads lists the operations.
    assert "SwaggerUIBundle" in (STATIC / "swagger-ui-bundle.js").read_text()
    schema_url = next(url for kind, url in references(html) if kind == "schema")
    paths = client.get(schema_url).json()["paths"]
    assert set(NATIVE) <= set(paths)
    # The validator badge would send the schema's URL to validator.swagger.io.
    assert '"validatorUrl": null' in html


@pytest.mark.parametrize("page", PAGES)
def test_pages_keep_the_browser_on_this_host(client, page):
    # ReDoc's script shows the Redocly logo from a CDN; the policy stops the browser fetching it.
    policy = client.get(page).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["img-src"] == "'self' data: blob:"
    assert directives["connect-src"] == "'self'"
    assert directives["font-src"] == "'self' data:"


def test_only_the_listed_assets_are_served(client):
    assert sorted(DOCS_ASSETS) == sorted(
        p.name for p in STATIC.iterdir() if p.suffix in {".js", ".css", ".png"}
    )
    for name in ("README.md", "redoc.LICENSE", "nope.js", "..%2Fapp.py"):
        assert client.get(DOCS_ASSETS_PREFIX + name).status_code == 404, name


def test_vendored_files_match_their_provenance():
    # static/docs/README.md lists the sha256 of every file taken from the npm packages.
    readme = (STATIC / "README.md").read_text()
    listed = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    on_disk = {p.name for p in STATIC.iterdir()} - {"README.md"}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    assert {"swagger-ui-dist.LICENSE", "swagger-ui-dist.NOTICE", "redoc.LICENSE"} <= on_disk


def test_with_a_key_the_docs_need_none(secured):
    for page in PAGES:
        response = secured.get(page)
        assert response.status_code == 200, page
        for _, url in references(response.text):
            assert secured.get(url).status_code == 200, url
    for path in DOCS_PATHS:
        assert secured.get(path).status_code == 200, path
    # Swagger UI shows "Authorize" for the declared scheme; the user enters the key there.
    schema = secured.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key"
    }  # fmt: skip
    assert schema["security"] == [{"APIKey": []}]


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/encode"), ("GET", "/model"), ("GET", "/metrics"),
     ("GET", DOCS_ASSETS_PREFIX + "redoc.LICENSE"), ("GET", "/docs/oauth2-redirect"),
     ("GET", "/docs/"), ("GET", "/openapi.json/")],
)  # fmt: skip
def test_with_a_key_everything_else_still_needs_it(secured, method, path):
    response = secured.request(method, path, json={"vectors": [[0] * 64]})
    assert response.status_code == 401, path
