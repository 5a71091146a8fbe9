"""The KServe manifests: valid against KServe's CRD schemas, and the same service as deploy/k8s/."""

import copy
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.settings import Settings
from tests.conftest import ROOT

KSERVE = ROOT / "deploy" / "kserve"
K8S = ROOT / "deploy" / "k8s"
CRDS = Path(__file__).parent / "kserve_crds"
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
}
MANIFESTS = sorted(KSERVE.glob("*.yaml"))
# The paths KServe's V2 (Open Inference Protocol) health checks use.
READY, LIVE = "/v2/health/ready", "/v2/health/live"
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _load(path: Path) -> dict:
    document: dict = yaml.safe_load(path.read_text())
    return document


def _manifest(name: str) -> dict:
    return _load(KSERVE / name)


def _k8s(kind: str) -> dict:
    (document,) = (doc for doc in map(_load, sorted(K8S.glob("*.yaml"))) if doc["kind"] == kind)
    return document


@cache
def _crd(kind: str) -> dict:
    text = (CRDS / CRD_FILES[kind]).read_text()
    crd: dict = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["kind"] == kind
    return crd


# --- validation against a CRD's openAPIV3Schema -------------------------------------------------


def _kubernetes_schema(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema, checked the way `kubectl apply` checks it.

    - Unknown fields are errors (`kubectl`'s default strict field validation): an object schema
      with `properties` gets `additionalProperties: false` unless it keeps unknown fields.
    - `x-kubernetes-int-or-string` allows an integer or a string (controller-gen already spells
      that as `anyOf`; this covers schemas that do not).
    - Other `x-kubernetes-*` keywords (list types and keys, map types, CEL rules) are ignored, as
      JSON Schema ignores unknown keywords: the API server checks those, these tests do not.
    """
    if isinstance(node, list):
        return [_kubernetes_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = dict(node)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = _kubernetes_schema(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = _kubernetes_schema(schema[key])
    if "properties" in schema:
        schema["properties"] = {
            name: _kubernetes_schema(sub) for name, sub in schema["properties"].items()
        }
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") and not {"type", "anyOf"} & set(schema):
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return schema


def _in_range(bits: int):
    def check(value: object) -> bool:
        # The format applies to integers only; `type` rejects anything else.
        if not isinstance(value, int) or isinstance(value, bool):
            return True
        limit = 1 << (bits - 1)
        return -limit <= value < limit

    return check


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("int32")(_in_range(32))
FORMATS.checks("int64")(_in_range(64))


@cache
def _validator(kind: str, api_version: str) -> Any:
    crd = _crd(kind)
    group = crd["spec"]["group"]
    served = {f"{group}/{v['name']}": v for v in crd["spec"]["versions"] if v["served"]}
    if api_version not in served:
        raise ValueError(f"{kind} {api_version} is not served; served: {sorted(served)}")
    schema = _kubernetes_schema(served[api_version]["schema"]["openAPIV3Schema"])
    # OpenAPI v3.0 schemas are closest to JSON Schema draft 4 (boolean exclusiveMinimum, ...).
    return jsonschema.Draft4Validator(schema, format_checker=FORMATS)


def _errors(document: dict) -> list[str]:
    """Every way the document breaks its CRD's schema, as "path: message"."""
    validator = _validator(document["kind"], document["apiVersion"])
    return sorted(
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    )


# --- the vendored CRDs ---------------------------------------------------------------------------


def test_vendored_crds_match_their_recorded_checksums():
    provenance = (CRDS / "PROVENANCE.md").read_text()
    recorded = dict(re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{64}) \|$", provenance, re.M))
    assert set(recorded) == {*CRD_FILES.values(), "LICENSE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((CRDS / name).read_bytes()).hexdigest() == digest, name


# --- schema validity -----------------------------------------------------------------------------


def test_all_manifests_present():
    kinds = {path.name: _load(path)["kind"] for path in MANIFESTS}
    assert kinds == {
        "servingruntime.yaml": "ServingRuntime",
        "inferenceservice.yaml": "InferenceService",
        "inferenceservice-runtime.yaml": "InferenceService",
    }


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kserve_crd(path):
    assert _errors(_load(path)) == []


def _set(document: dict, path: str, value: Any) -> dict:
    broken = copy.deepcopy(document)
    *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]
    node = broken
    for key in parents:
        node = node[key]
    node[last] = value
    return broken


MISTAKES = [
    # (manifest, dotted path, bad value, the path the error must name)
    ("inferenceservice.yaml", "spec.predictor.minReplicas", "two", "spec.predictor.minReplicas"),
    ("inferenceservice.yaml", "spec.predictor.scaleMetric", "gpu", "spec.predictor.scaleMetric"),
    (
        "inferenceservice.yaml",
        "spec.predictor.containers.0.readinessProbe.httpGet.pathh",
        READY,
        "spec.predictor.containers.0.readinessProbe.httpGet",
    ),
    (
        "inferenceservice.yaml",
        "spec.predictor.containers.0.ports.0.containerPort",
        2**31,
        "spec.predictor.containers.0.ports.0.containerPort",
    ),
    (
        "inferenceservice-runtime.yaml",
        "spec.predictor.model.protocolVersion",
        ["v2"],
        "spec.predictor.model.protocolVersion",
    ),
    (
        "inferenceservice-runtime.yaml",
        "spec.predictor.model.resources.limits.memory",
        "256 MiB",
        "spec.predictor.model.resources.limits.memory",
    ),
    (
        "servingruntime.yaml",
        "spec.supportedModelFormats.0.autoSelect",
        "yes",
        "spec.supportedModelFormats.0.autoSelect",
    ),
    ("servingruntime.yaml", "spec.protocolVersion", ["v2"], "spec"),
    ("servingruntime.yaml", "spec.containers", None, "spec.containers"),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "where"), MISTAKES, ids=[f"{m[0]}:{m[1]}" for m in MISTAKES]
)
def test_validation_catches_a_mistake(name, path, value, where):
    errors = _errors(_set(_manifest(name), path, value))
    assert errors, f"{name}: {path} = {value!r} was accepted"
    assert any(error.startswith(f"{where}: ") for error in errors), errors


def test_validation_catches_a_missing_required_field():
    runtime = _manifest("servingruntime.yaml")
    del runtime["spec"]["containers"]
    assert _errors(runtime) == ["spec: 'containers' is a required property"]


def test_unserved_api_version_is_refused():
    with pytest.raises(ValueError, match="not served"):
        _errors(_set(_manifest("servingruntime.yaml"), "apiVersion", "serving.kserve.io/v1beta1"))


# --- what the manifests say ----------------------------------------------------------------------


def _containers() -> dict[str, dict]:
    """The V2 server's container, as the runtime and the self-contained predictor define it."""
    (runtime,) = _manifest("servingruntime.yaml")["spec"]["containers"]
    (custom,) = _manifest("inferenceservice.yaml")["spec"]["predictor"]["containers"]
    return {"servingruntime.yaml": runtime, "inferenceservice.yaml": custom}


def test_names():
    for document in map(_load, MANIFESTS):
        name = document["metadata"]["name"]
        assert name == "digitcode"
        # KServe refuses InferenceService names that are not DNS-1035 labels.
        assert DNS_1035_LABEL.fullmatch(name)


def test_both_forms_run_the_same_container():
    runtime = _manifest("servingruntime.yaml")["spec"]
    custom = _manifest("inferenceservice.yaml")["spec"]["predictor"]
    assert runtime["containers"] == custom["containers"]
    assert runtime["volumes"] == custom["volumes"]


@pytest.mark.parametrize("source", ["servingruntime.yaml", "inferenceservice.yaml"])
def test_container_serves_v2_on_8080_with_probes_on_its_port(source):
    container = _containers()[source]
    # KServe's predictor container name; its traffic goes to 8080.
    assert container["name"] == "kserve-container"
    (port,) = container["ports"]
    assert port["containerPort"] == 8080
    assert port["name"] in {"http1", "h2c"}  # the names Knative accepts
    for probe, path in (("readinessProbe", READY), ("livenessProbe", LIVE)):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path
        # Knative only allows probing the serving port; give it as a number, not a name.
        assert http_get["port"] == port["containerPort"]


@pytest.mark.parametrize("source", ["servingruntime.yaml", "inferenceservice.yaml"])
def test_container_is_deploy_k8s_image_and_settings(source):
    container = _containers()[source]
    (k8s_container,) = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == k8s_container["image"]
    assert "command" not in container and "args" not in container  # the image's CMD
    env = {item["name"]: item["value"] for item in container["env"]}
    # the ConfigMap's settings, unchanged
    assert _k8s("ConfigMap")["data"].items() <= env.items()
    known = {f"DIGITCODE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known
    settings = Settings(**{k.removeprefix("DIGITCODE_").lower(): v for k, v in env.items()})
    assert settings.port == container["ports"][0]["containerPort"]
    assert settings.host == "0.0.0.0"
    assert settings.workers == 1
    # the model the Dockerfile bakes into the image
    assert f"COPY models/default/ {settings.model_dir}/" in (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("source", ["servingruntime.yaml", "inferenceservice.yaml"])
def test_container_is_locked_down_as_in_deploy_k8s(source):
    container = _containers()[source]
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    (k8s_container,) = pod["containers"]
    # deploy/k8s sets uid, runAsNonRoot and seccomp for the pod; a ServingRuntime has no pod
    # security context, so here all of it is on the container. `privileged: false` is the default.
    expected = {**pod["securityContext"], **k8s_container["securityContext"]}
    assert expected.pop("privileged") is False
    security = container["securityContext"]
    assert security == expected
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"] == k8s_container["resources"]
    assert container["volumeMounts"] == k8s_container["volumeMounts"]


def test_volumes_as_in_deploy_k8s():
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    assert _manifest("servingruntime.yaml")["spec"]["volumes"] == pod["volumes"]


@pytest.mark.parametrize("name", ["inferenceservice.yaml", "inferenceservice-runtime.yaml"])
def test_predictor_scales_as_deploy_k8s(name):
    predictor = _manifest(name)["spec"]["predictor"]
    hpa = _k8s("HorizontalPodAutoscaler")["spec"]
    assert predictor["minReplicas"] == hpa["minReplicas"]
    assert predictor["maxReplicas"] == hpa["maxReplicas"]
    # at most as many requests per pod as its one worker takes before answering 503
    assert predictor["containerConcurrency"] == int(
        _k8s("ConfigMap")["data"]["DIGITCODE_MAX_CONCURRENCY"]
    )
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    assert predictor["automountServiceAccountToken"] is pod["automountServiceAccountToken"] is False


def test_runtime_serves_the_inference_service():
    runtime = _manifest("servingruntime.yaml")
    model = _manifest("inferenceservice-runtime.yaml")["spec"]["predictor"]["model"]
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"]: f for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    supported = formats[model["modelFormat"]["name"]]
    assert model["modelFormat"]["version"] == supported["version"]
    assert supported["autoSelect"] is True
    # the model's resources override the runtime's; both are deploy/k8s's
    (k8s_container,) = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert model["resources"] == k8s_container["resources"]
    assert "storageUri" not in model  # the model is in the image
