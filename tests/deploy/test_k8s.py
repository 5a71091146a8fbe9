"""The Kubernetes manifests: valid against the Kubernetes schemas, and safe as configured."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.conftest import ROOT

MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
K8S_VERSION = "1.30.0"


def _load(path: Path) -> dict:
    document: dict = yaml.safe_load(path.read_text())
    return document


def _by_kind() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in map(_load, MANIFESTS)}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path):
    # strict: unknown fields are errors too
    kubernetes_validate.validate(_load(path), K8S_VERSION, strict=True)


def test_validation_catches_a_mistake():
    deployment = _by_kind()["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"][
        "pathh"
    ] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_all_kinds_present():
    assert set(_by_kind()) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }


def test_deployment_is_locked_down_and_probed():
    pod = _by_kind()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_configmap_keys_are_real_settings():
    data = _by_kind()["ConfigMap"]["data"]
    known = {f"DIGITCODE_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= known
    env = {key.removeprefix("DIGITCODE_").lower(): value for key, value in data.items()}
    settings = Settings(**env)  # every value parses
    assert settings.workers == 1


def test_hpa_targets_the_deployment():
    hpa = _by_kind()["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == _by_kind()["Deployment"]["metadata"]["name"]
