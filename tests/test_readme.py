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
    assert len(names) == 6
    for name in names:
        assert f"`{name}`" in section, name
    assert observability.REQUEST_ID_HEADER in README
