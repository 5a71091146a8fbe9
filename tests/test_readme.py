"""The README documents every setting and every metric the code has."""

import re

from service import observability
from service.settings import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table():
    configuration = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for name in Settings.model_fields:
        assert f"`DIGITCODE_{name.upper()}`" in configuration, name


def test_every_metric_is_in_the_observability_section():
    section = README.split("## Observability", 1)[1].split("\n## ", 1)[0]
    source = (ROOT / "service" / "observability.py").read_text()
    names = set(re.findall(r'"(digitcode_[a-z_]+)"', source))
    assert len(names) == 13
    for name in names:
        assert f"`{name}`" in section, name
    assert observability.REQUEST_ID_HEADER in README


def test_the_curl_example_answers_what_the_readme_shows():
    import json

    import numpy as np
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.conftest import DATA, DEFAULT_MODEL

    shown = re.search(r"# (\{\"latent\":\[\[.*?\]\]\})", README)
    assert shown is not None
    row = np.loadtxt(DATA / "optdigits.tes", delimiter=",", max_rows=1)[:64]
    with TestClient(create_app(Settings(model_dir=DEFAULT_MODEL))) as client:
        answer = client.post("/encode", json={"vectors": [row.tolist()]})
    assert answer.content == json.dumps(json.loads(shown[1]), separators=(",", ":")).encode()
