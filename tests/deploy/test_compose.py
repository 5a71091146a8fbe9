"""docker-compose.yml: the service as the image runs it, and Prometheus scraping it."""

import yaml

from tests.conftest import ROOT


def test_prometheus_scrapes_the_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["digitcode"]
    assert service["read_only"] is True and service["tmpfs"][0].startswith("/tmp")
    assert "8000:8000" in service["ports"]
    mount = compose["services"]["prometheus"]["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / mount).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["digitcode:8000"]
