"""The explorer page (``GET /``) in a real browser: Debian's Chromium driven by Playwright.

Run by ``make browser-test`` (which installs Chromium with apt when it is missing), not by plain
``pytest``. Every test blocks requests to any host but the service and fails on a console error.
Screenshots of each state are saved for a reviewer in ``build/explorer-screenshots/`` (or
``$DIGITCODE_SCREENSHOTS``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.conftest import DATA, ROOT, running_service
from training.data import load_optdigits

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("DIGITCODE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("DIGITCODE_SCREENSHOTS", ROOT / "build" / "explorer-screenshots"))
COLOURS = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#7f7f7f",
]  # fmt: skip
KEY = "explorer-test-key"
FILLS = "cs => cs.map(c => c.getAttribute('fill'))"
# The digit shown is the one decoded at the cursor's current place.
CAUGHT_UP = (
    "() => { const e = window.explorer; return e.decoded && e.cursor "
    "&& e.decoded.latent[0] === e.cursor[0] && e.decoded.latent[1] === e.cursor[1]; }"
)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    with running_service({}) as (_, url):
        yield url


@pytest.fixture(scope="module")
def keyed_service() -> Iterator[str]:
    with running_service({"DIGITCODE_API_KEY": KEY}) as (_, url):
        yield url


class Visit:
    """A page of the service, with what it logged and what it tried to fetch elsewhere."""

    def __init__(self, browser: Browser, url: str, **context: Any) -> None:
        self.url = url
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.requests: list[dict[str, str]] = []
        host = urlsplit(url).netloc
        self.context.route("**/*", lambda route: self._route(route, host))
        self.page: Page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _route(self, route: Any, host: str) -> None:
        request = route.request
        if urlsplit(request.url).netloc != host and not request.url.startswith(("data:", "blob:")):
            self.foreign.append(request.url)
            route.abort()
            return
        self.requests.append({"url": request.url, **request.headers})
        route.continue_()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def open(self, path: str = "/") -> Page:
        self.page.goto(self.url + path)
        return self.page

    def ready(self) -> Page:
        self.page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        return self.page

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        assert self.errors == [], self.errors
        assert self.foreign == [], self.foreign
        self.context.close()


@pytest.fixture
def visit(browser: Browser, service: str) -> Iterator[Visit]:
    v = Visit(browser, service, accept_downloads=True)
    yield v
    v.close()


def _state(page: Page, expression: str) -> Any:
    return page.evaluate(f"() => window.explorer.{expression}")


def _canvas_pixels(page: Page, element_id: str) -> list[int]:
    """The red channel of an 8x8 digit canvas: 255 - 255 * value / 16, rounded."""
    return list(
        page.evaluate(
            """(id) => Array.from(document.getElementById(id).getContext('2d')
                .getImageData(0, 0, 8, 8).data.filter((_, i) => i % 4 === 0))""",
            element_id,
        )
    )


def _shades(vector: list[float]) -> list[int]:
    return [int(np.floor(255 - min(max(v, 0), 16) / 16 * 255 + 0.5)) for v in vector]


def _print_timings(what: str, timings: list[float]) -> None:
    # Reported, not asserted: speed is measured, not unit-tested, on a shared machine.
    print(
        f"{what}: {len(timings)} updates, median {np.median(timings):.1f} ms, "
        f"95th percentile {np.percentile(timings, 95):.1f} ms, largest {max(timings):.1f} ms"
    )


def _centre(page: Page, selector: str) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_the_page_loads_offline_with_no_console_error(visit: Visit):
    page = visit.open()
    visit.ready()
    assert "digits it was not fitted on" in page.locator("#status").inner_text()
    # Every asset came from the service (the route blocks and records any other host).
    paths = {urlsplit(r["url"]).path for r in visit.requests}
    assert {"/", "/explorer/explorer.js", "/explorer/explorer.css", "/reference"} <= paths
    print(f"interactive {_state(visit.page, 'timings.ready'):.0f} ms after navigation started")
    visit.shot("1-loaded")


def test_the_map_shows_every_reference_point_coloured_by_digit(visit: Visit, service: str):
    page = visit.open()
    visit.ready()
    reference = httpx.get(f"{service}/reference").json()
    codes = httpx.post(f"{service}/encode", json={"vectors": reference["vectors"]}).json()["latent"]
    assert _state(page, "reference.labels") == reference["labels"]
    # The page encodes 256 rows a request: the same float32 codes but for a last bit here and
    # there (the matrix product's rounding can depend on its rows).
    np.testing.assert_allclose(_state(page, "reference.codes"), codes, rtol=1e-6, atol=1e-6)
    circles = page.eval_on_selector_all(
        "#reference-points circle",
        "cs => cs.map(c => [+c.getAttribute('cx'), +c.getAttribute('cy'), c.getAttribute('fill')])",
    )
    assert len(circles) == len(reference["labels"]) == len(codes) > 100
    assert [fill for _, _, fill in circles] == [COLOURS[k] for k in reference["labels"]]
    assert set(reference["labels"]) == set(range(10))
    # Placed at their codes: x grows with z1, y (downwards on screen) shrinks with z2.
    z = np.array(codes)
    xy = np.array([[x, y] for x, y, _ in circles])
    for axis, sign in ((0, 1), (1, -1)):
        slope, intercept = np.polyfit(z[:, axis], xy[:, axis], 1)
        assert sign * slope > 0
        np.testing.assert_allclose(slope * z[:, axis] + intercept, xy[:, axis], atol=1e-3)
    legend = page.locator("#legend li").all_inner_texts()
    assert [t.strip() for t in legend] == [str(d) for d in range(10)]


def test_hovering_a_point_shows_it_and_the_pointer_decodes_what_decode_answers(
    visit: Visit, service: str
):
    page = visit.open()
    visit.ready()
    # A dot on top of any other at its centre (the map has hundreds, many overlapping).
    index = page.evaluate(
        """() => [...document.querySelectorAll('#reference-points circle')].findIndex(c => {
            const b = c.getBoundingClientRect();
            return document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2) === c; })"""
    )
    assert index >= 0
    page.mouse.move(*_centre(page, f'#reference-points circle[data-index="{index}"]'))
    label = _state(page, f"reference.labels[{index}]")
    page.wait_for_function(f"() => window.explorer.hovered?.index === {index}")
    assert page.locator("#point-info").inner_text().startswith(f"Digit {label} ")
    assert _canvas_pixels(page, "point-digit") == _shades(
        _state(page, f"reference.vectors[{index}]")
    )
    visit.shot("2-hover")
    # Somewhere else on the plane: the decoded digit is exactly /decode's answer for the point.
    box = page.locator("#map").bounding_box()
    assert box is not None
    for fx, fy in [(0.2, 0.3), (0.75, 0.6), *((0.1 + 0.04 * i, 0.5) for i in range(20))]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function(CAUGHT_UP)
        decoded = _state(page, "decoded")
        answer = httpx.post(f"{service}/decode", json={"latent": [decoded["latent"]]}).json()
        assert decoded["vector"] == answer["vectors"][0]
        assert _canvas_pixels(page, "decoded") == _shades(answer["vectors"][0])
    _print_timings("pointer decoding, one move at a time", _state(page, "timings.decode"))
    # A sweep, as a hand moves a mouse: a move every 16 ms, none waited for; then the last.
    page.evaluate("() => { window.explorer.timings.decode = []; }")
    for i in range(60):
        page.mouse.move(box["x"] + (0.1 + 0.013 * i) * box["width"], box["y"] + 0.3 * box["height"])
        page.wait_for_timeout(16)  # the pace of the moves, not a wait for a result
    page.wait_for_function(CAUGHT_UP)
    decoded = _state(page, "decoded")
    answer = httpx.post(f"{service}/decode", json={"latent": [decoded["latent"]]}).json()
    assert decoded["vector"] == answer["vectors"][0]  # the last position's digit is shown
    _print_timings("pointer decoding, a sweep", _state(page, "timings.decode"))
    visit.shot("3-decode")


def _press(page: Page, key: str) -> list[float]:
    """Press ``key`` on the map; the cursor's code once its digit is decoded."""
    before = _state(page, "cursor")
    page.keyboard.press(key)
    page.wait_for_function(
        f"() => JSON.stringify(window.explorer.cursor) !== {json.dumps(json.dumps(before))}"
    )
    page.wait_for_function(CAUGHT_UP)
    latent: list[float] = _state(page, "decoded.latent")
    return latent


def test_the_keyboard_moves_the_cursor_decodes_and_picks(visit: Visit):
    page = visit.open()
    visit.ready()
    page.wait_for_function(CAUGHT_UP)  # the centre, decoded at load
    centre = _state(page, "decoded.latent")
    page.focus("#map")
    first = _press(page, "ArrowRight")
    second = _press(page, "ArrowRight")
    assert centre[0] < first[0] < second[0] and centre[1] == first[1] == second[1]
    third = _press(page, "Shift+ArrowUp")  # five steps at once
    assert third[0] == second[0]
    assert third[1] - second[1] == pytest.approx(5 * (second[0] - first[0]))
    page.keyboard.press("Enter")
    _press(page, "ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.explorer.strip !== null")
    assert _state(page, "strip.latent")[0] == third


def test_the_grid_lays_decoded_digits_over_the_plane(visit: Visit, service: str):
    page = visit.open()
    visit.ready()
    page.check("#grid-toggle")
    page.wait_for_function(
        """() => { const d = document.getElementById('grid').getContext('2d')
            .getImageData(0, 0, 600, 600).data; for (let i = 3; i < d.length; i += 4)
            if (d[i] > 0) return true; return false; }"""
    )
    visit.shot("4-grid")
    page.uncheck("#grid-toggle")
    blank = page.evaluate(
        """() => document.getElementById('grid').getContext('2d')
            .getImageData(0, 0, 600, 600).data.every(v => v === 0)"""
    )
    assert blank


def test_drawing_a_one_lands_it_nearer_the_ones_than_any_other_digit(visit: Visit, service: str):
    page = visit.open()
    visit.ready()
    box = page.locator("#pad").bounding_box()
    assert box is not None
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    for t in np.linspace(0.1, 0.9, 20):
        page.mouse.move(x, box["y"] + box["height"] * t)
    page.mouse.up()
    # Scored while drawing, and once more at the end: wait for the last drawing's answers.
    page.wait_for_function(
        "() => { const e = window.explorer; return e.drawn && e.drawn.seq === e.pad.sent; }"
    )
    drawn = _state(page, "drawn")
    vector = drawn["vector"]
    assert all(isinstance(v, int) and 0 <= v <= 16 for v in vector) and sum(vector) > 40
    image = np.array(vector).reshape(8, 8)
    assert image[:, 3:5].sum() > 0.8 * image.sum()  # a vertical stroke down the middle
    answer = httpx.post(f"{service}/encode", json={"vectors": [vector]}).json()
    assert drawn["latent"] == answer["latent"][0]
    codes = np.array(_state(page, "reference.codes"))
    labels = np.array(_state(page, "reference.labels"))
    centres = np.array([codes[labels == k].mean(axis=0) for k in range(10)])
    distances = np.linalg.norm(centres - np.array(drawn["latent"]), axis=1)
    assert int(np.argmin(distances)) == 1, distances
    assert page.locator("#drawn-info").inner_text().startswith("At (")
    visit.shot("5-drawn")


def downloaded_codes(rows: list[list[str]]) -> list[list[float]]:
    return [[float(a), float(b)] for a, b, *_ in rows[1:]]


def _write_csv(path: Path, rows: np.ndarray, labels: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"p{i}" for i in range(64)] + ["label"])  # a header, as users have
        for row, label in zip(rows, labels, strict=True):
            writer.writerow([int(v) for v in row] + [int(label)])


def test_uploaded_rows_join_the_map_and_their_codes_download(
    visit: Visit, service: str, tmp_path: Path
):
    X, y = load_optdigits(DATA / "optdigits.tes")
    X, y = X[:300], y[:300]  # more than one request's worth (the page sends 256 at a time)
    upload = tmp_path / "mine.csv"
    _write_csv(upload, X, y)
    page = visit.open()
    visit.ready()
    page.set_input_files("#csv-file", str(upload))
    page.wait_for_function("() => !document.getElementById('download').disabled")
    assert page.locator("#user-points circle").count() == 300
    assert page.locator("#data-info").inner_text().startswith("mine.csv: 300 rows")
    fills = page.eval_on_selector_all(
        "#user-points circle", "cs => cs.map(c => c.getAttribute('fill'))"
    )
    assert fills == [COLOURS[k] for k in y]
    visit.shot("6-uploaded")
    with page.expect_download() as download_info:
        page.click("#download")
    saved = tmp_path / "codes.csv"
    download_info.value.save_as(saved)
    rows = list(csv.reader(saved.open()))
    assert rows[0] == ["z1", "z2", "label"]
    expected = httpx.post(f"{service}/encode", json={"vectors": X.tolist()}).json()["latent"]
    # The codes shown, and /encode's to float32 rounding (as above).
    assert downloaded_codes(rows) == _state(page, "user.codes")
    downloaded = np.array(downloaded_codes(rows))
    np.testing.assert_allclose(downloaded, expected, rtol=1e-6, atol=1e-6)
    assert [int(label) for *_, label in rows[1:]] == y.tolist()
    # Coloured by error instead: a continuous scale, with its legend.
    page.select_option("#colour-by", "error")
    assert page.locator("#error-legend").is_visible()
    fills = page.eval_on_selector_all(
        "#user-points circle", "cs => cs.map(c => c.getAttribute('fill'))"
    )
    assert all(f.startswith("rgb(") for f in fills) and len(set(fills)) > 50
    visit.shot("7-by-error")


ROW = ",".join(["3"] * 64)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3\n", "line 1: 3 columns, expected 64 pixels (and a label)"),
        (f"{ROW}\n{ROW},\n", "line 2: 65 columns, but line 1 has 64"),
        (f"{ROW},\n", "line 1, column 65: empty"),
        ("a,b\n" + ROW.replace("3", "", 1) + "\n", "line 2, column 1: empty"),
        (f"{ROW}\r{ROW.replace('3', '17', 1)}\r", "line 2, column 1: value 17 is outside [0, 16]"),
        (f"{ROW}\n{ROW.replace('3', 'x3', 1)}\n", 'line 2, column 1: "x3" is not a number'),
    ],
    ids=["columns", "ragged", "trailing-comma", "empty-after-header", "cr-out-of-range", "word"],
)
def test_a_bad_csv_is_explained_by_line_and_column(
    visit: Visit, tmp_path: Path, text: str, message: str
):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(text.encode())
    page = visit.open()
    visit.ready()
    page.set_input_files("#csv-file", str(bad))
    page.wait_for_function(
        "() => document.getElementById('data-info').textContent.startsWith('bad.csv: ')"
    )
    assert page.locator("#data-info").inner_text() == f"bad.csv: {message}"
    assert page.locator("#user-points circle").count() == 0


def test_a_csv_without_labels_is_coloured_by_error(visit: Visit, tmp_path: Path):
    X = load_optdigits(DATA / "optdigits.tes")[0][:20]
    plain = tmp_path / "plain.tsv"
    plain.write_text("\n".join("\t".join(str(int(v)) for v in row) for row in X) + "\n\n")
    page = visit.open()
    visit.ready()
    page.set_input_files("#csv-file", str(plain))
    page.wait_for_function("() => !document.getElementById('download').disabled")
    assert page.locator("#user-points circle").count() == 20
    assert page.locator("#colour-by").is_disabled()
    assert page.locator("#error-legend").is_visible()


def test_picking_two_points_decodes_the_segment_between_them(visit: Visit, service: str):
    page = visit.open()
    visit.ready()
    page.click('#reference-points circle[data-index="0"]', force=True)
    page.click('#reference-points circle[data-index="1"]', force=True)
    page.wait_for_function("() => window.explorer.strip !== null")
    strip = _state(page, "strip")
    codes = _state(page, "reference.codes")
    assert strip["latent"][0] == codes[0] and len(strip["latent"]) == 10
    np.testing.assert_allclose(strip["latent"][-1], codes[1], rtol=1e-12)
    answer = httpx.post(f"{service}/decode", json={"latent": strip["latent"]}).json()
    assert strip["vectors"] == answer["vectors"]
    assert page.locator("#strip canvas").count() == 10
    visit.shot("8-interpolated")


def test_with_an_api_key_the_page_asks_for_it_and_sends_it(browser: Browser, keyed_service: str):
    visit = Visit(browser, keyed_service)
    page = visit.open()
    page.wait_for_selector("#key-form:not([hidden])")
    visit.shot("9-key-asked")
    page.fill("#api-key", "wrong")
    page.click("#key-form button")
    page.wait_for_function(
        "() => document.getElementById('key-error').textContent.includes('refused')"
    )
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    visit.ready()
    assert page.locator("#key-form").is_hidden()
    api_calls = [r for r in visit.requests if urlsplit(r["url"]).path in ("/reference", "/encode")]
    assert api_calls and api_calls[-1].get("x-api-key") == KEY
    page.mouse.move(*_centre(page, "#map"))
    page.wait_for_function("() => window.explorer.decoded !== null")
    # A 401 in the console is the browser reporting the refused key, not a page error.
    visit.errors = [e for e in visit.errors if "401" not in e]
    visit.close()


def test_the_api_docs_render_offline(visit: Visit):
    page = visit.open("/docs")
    page.wait_for_selector(".opblock", timeout=15_000)
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/encode", "/decode", "/reconstruct", "/reference"} <= {s.strip() for s in summaries}
    visit.shot("10-docs")


def test_a_reloaded_model_is_announced(visit: Visit):
    page = visit.open()
    visit.ready()

    def newer(route: Any) -> None:  # as if the service had reloaded another model version
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "x-model-version": "newer"})

    page.route("**/decode", newer)
    box = page.locator("#map").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('now serves model newer')"
    )
    assert "reload the page" in page.locator("#status").inner_text()


def test_the_keyboard_draws_on_the_pad(visit: Visit, service: str):
    page = visit.open()
    visit.ready()
    page.focus("#pad")
    page.keyboard.press("Shift+ArrowUp")  # from the centre (16, 16) to (16, 12), then up to 4
    page.keyboard.press("Shift+ArrowUp")
    page.keyboard.press("Shift+ArrowUp")
    page.keyboard.press("Space")  # pen down
    for _ in range(6):
        page.keyboard.press("Shift+ArrowDown")  # down to 28: a vertical stroke
    page.keyboard.press("Space")  # pen up
    assert page.locator("#pen-info").inner_text() == "Pen up at 16, 28 of 32."
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => { const e = window.explorer; return e.drawn && e.drawn.seq === e.pad.sent; }"
    )
    vector = _state(page, "drawn.vector")
    image = np.array(vector).reshape(8, 8)
    assert image.sum() > 40 and image[:, 3:5].sum() > 0.8 * image.sum()
    answer = httpx.post(f"{service}/encode", json={"vectors": [vector]}).json()
    assert _state(page, "drawn.latent") == answer["latent"][0]
    page.keyboard.press("Delete")
    page.wait_for_function("() => window.explorer.drawn === null")
