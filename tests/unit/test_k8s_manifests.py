"""The Kubernetes manifests in infra/k8s: schema-valid, and consistent with chatbus itself.

Validation is offline:

* built-in kinds against the Kubernetes OpenAPI schemas that the PyPI package
  ``kubernetes-validate`` bundles, in strict mode (unknown fields are errors), for the oldest and
  the newest Kubernetes release the manifests support;
* the KEDA ``ScaledObject`` against the CRD schema vendored in ``infra/k8s/schemas`` (from KEDA's
  Go module; ``vendor_keda.py`` there says exactly where), and its kafka trigger's metadata against
  the parameter list vendored beside it.

The kustomizations use only ``namespace``, ``resources`` and ``images``, which this file renders
itself; where ``kubectl`` is installed, its ``kubectl kustomize`` must render the same objects.
"""

from __future__ import annotations

import ast
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from chatbus.settings import Settings, variable_names

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
EXAMPLES = K8S / "examples"
SCHEMAS = K8S / "schemas"
# Oldest: the preStop `sleep` action is on by default from 1.30. Newest: kubernetes-validate's.
K8S_VERSIONS = ("1.30", "1.37")
STANDALONE = (
    K8S / "secret.template.yaml",
    EXAMPLES / "mongodb-secret.template.yaml",
    EXAMPLES / "models-pvc.yaml",
)
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "PriorityClass",
}
POD_OWNERS = {"Deployment", "StatefulSet", "Job"}
NON_CHATBUS_ENV = {"HF_HUB_OFFLINE"}
_SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}


# --- rendering ---------------------------------------------------------------------------------
def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def render(directory: Path) -> list[dict[str, Any]]:
    """What ``kubectl kustomize DIRECTORY`` renders, for the subset of kustomize used here."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - _SUPPORTED_KUSTOMIZE_KEYS
    assert not unsupported, f"render() does not implement kustomize's {sorted(unsupported)}"
    images = {i["name"]: i for i in kustomization.get("images", [])}
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        for doc in load_docs(directory / resource):
            doc = copy.deepcopy(doc)
            if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
            if doc["kind"] in POD_OWNERS:
                for c in containers(doc):
                    name, _, tag = c["image"].partition(":")
                    if name in images:
                        new = images[name]
                        c["image"] = f"{new.get('newName', name)}:{new.get('newTag', tag)}"
            docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def main_docs() -> list[dict[str, Any]]:
    return render(K8S)


@pytest.fixture(scope="module")
def example_docs() -> list[dict[str, Any]]:
    return render(EXAMPLES)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def all_rendered() -> list[tuple[str, dict[str, Any]]]:
    out = [(f"k8s:{d['kind']}/{d['metadata']['name']}", d) for d in render(K8S)]
    out += [(f"examples:{d['kind']}/{d['metadata']['name']}", d) for d in render(EXAMPLES)]
    for path in STANDALONE:
        out += [(f"{path.name}:{d['kind']}/{d['metadata']['name']}", d) for d in load_docs(path)]
    return out


# --- schema validation -------------------------------------------------------------------------
def _crd_validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator_cls.check_schema(schema)
    return validator_cls(schema)


CRD_VALIDATORS = {("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json"}
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate(doc: dict[str, Any], version: str) -> None:
    """Raise when ``doc`` does not match its kind's schema (unknown kinds raise too)."""
    crd = CRD_VALIDATORS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        _crd_validator(crd).validate(doc)
        name = doc["metadata"]["name"]  # a CRD's schema leaves metadata to the API server
        if not (len(name) <= 253 and _DNS_1123.match(name)):
            raise jsonschema.ValidationError(f"metadata.name {name!r} is not a DNS-1123 name")
        return
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("where", "doc"), all_rendered(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_manifest_matches_its_schema(where: str, doc: dict[str, Any], version: str) -> None:
    validate(doc, version)


def test_there_is_something_to_validate(
    main_docs: list[dict[str, Any]], example_docs: list[dict[str, Any]]
) -> None:
    kinds = {d["kind"] for d in main_docs}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Job",
        "ScaledObject",
    } <= kinds
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "Job"} <= {
        d["kind"] for d in example_docs
    }


def _broken(doc: dict[str, Any], mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(resource={}),  # typo
        lambda d: d["spec"].update(replicas="two"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"][
            "httpGet"
        ].update(port=[9100]),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
        lambda d: d["spec"]["template"]["spec"]["tolerations"][0].update(effect=7),
    ],
    ids=["unknown-field", "replicas-string", "port-list", "container-without-name", "bad-type"],
)
def test_a_broken_deployment_fails_validation(main_docs: list[dict[str, Any]], mutate: Any) -> None:
    worker = find(main_docs, "Deployment", "chatbus-worker")
    validate(worker, K8S_VERSIONS[-1])
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(_broken(worker, mutate), K8S_VERSIONS[-1])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"].update(maxReplicaCount="many"),
        lambda d: d["spec"]["triggers"][0]["metadata"].update(lagThreshold=64),  # must be a string
        lambda d: d["spec"].pop("scaleTargetRef"),
        lambda d: d["spec"]["triggers"][0].pop("type"),
        lambda d: d["spec"]["scaleTargetRef"].update(name=["chatbus-worker"]),
        lambda d: d["metadata"].update(name="Chatbus_Worker"),
    ],
    ids=[
        "max-string",
        "metadata-int",
        "no-target",
        "trigger-without-type",
        "name-list",
        "bad-name",
    ],
)
def test_a_broken_scaledobject_fails_validation(
    main_docs: list[dict[str, Any]], mutate: Any
) -> None:
    scaled = find(main_docs, "ScaledObject", "chatbus-worker")
    validate(scaled, K8S_VERSIONS[-1])
    with pytest.raises(jsonschema.ValidationError):
        validate(_broken(scaled, mutate), K8S_VERSIONS[-1])


def test_an_unknown_kind_is_not_waved_through() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(doc, K8S_VERSIONS[-1])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", [K8S, EXAMPLES], ids=["k8s", "examples"])
def test_kubectl_kustomize_renders_the_same(directory: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    theirs = [d for d in yaml.safe_load_all(out) if d]

    def key(d: dict[str, Any]) -> str:
        return json.dumps(d, sort_keys=True)

    assert sorted(map(key, theirs)) == sorted(map(key, render(directory)))


def test_vendored_schemas_say_where_they_came_from() -> None:
    for name in ("keda.sh_v1alpha1_scaledobject.json", "keda_kafka_trigger_metadata.json"):
        comment = json.loads((SCHEMAS / name).read_text())["$comment"]
        assert re.search(r"github\.com/kedacore/keda/v2@v\d+\.\d+\.\d+ ", comment), comment


# --- consistency with chatbus ------------------------------------------------------------------
@pytest.fixture(scope="module")
def config(main_docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = find(main_docs, "ConfigMap", "chatbus-config")["data"]
    return data


@pytest.fixture(scope="module")
def secret_keys() -> dict[str, str]:
    (secret,) = load_docs(K8S / "secret.template.yaml")
    data: dict[str, str] = secret["stringData"]
    return data


@pytest.fixture
def settings(
    config: dict[str, str], secret_keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The Settings a pod gets: ConfigMap and Secret as its environment, nothing else."""
    for name in list(os.environ):
        if name.startswith("CHATBUS_"):
            monkeypatch.delenv(name)
    for name, value in {**config, **secret_keys}.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def chatbus_workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] in POD_OWNERS
        and any(c["image"].split("/")[-1].startswith("chatbus") for c in containers(d))
    ]


def test_every_env_var_set_is_a_setting(
    main_docs: list[dict[str, Any]], config: dict[str, str], secret_keys: dict[str, str]
) -> None:
    names = set(config) | set(secret_keys)
    for doc in chatbus_workloads(main_docs):
        for c in containers(doc):
            names |= {e["name"] for e in c.get("env", [])}
    unknown = sorted(n for n in names - NON_CHATBUS_ENV if n not in variable_names())
    assert not unknown, f"not fields of chatbus/settings.py: {unknown}"
    assert not set(config) & set(secret_keys), "a setting is in both the ConfigMap and the Secret"


def test_settings_load_from_the_configmap_and_secret(settings: Settings) -> None:
    assert settings.metrics_port == 9100
    assert settings.kafka.topic_replication == 3
    assert len(settings.kafka.bootstrap.split(",")) == 3
    assert settings.model.device == "cuda"
    assert "replicaSet=" in settings.mongo.url.get_secret_value()


def test_every_workload_reads_the_configmap_and_secret(main_docs: list[dict[str, Any]]) -> None:
    for doc in chatbus_workloads(main_docs):
        for c in pod_spec(doc)["containers"]:
            refs = {(k, v["name"]) for e in c.get("envFrom", []) for k, v in e.items()}
            assert refs == {
                ("configMapRef", "chatbus-config"),
                ("secretRef", "chatbus-credentials"),
            }, doc["metadata"]["name"]
            assert re.fullmatch(r"registry\.example\.com/chatbus-[a-z]+:0\.1\.0", c["image"])


def test_commands_are_chatbus_cli_commands(main_docs: list[dict[str, Any]]) -> None:
    from chatbus.cli import main

    for doc in chatbus_workloads(main_docs):
        for c in pod_spec(doc)["containers"]:
            program, command, *_ = c["command"]
            assert program == "chatbus"
            assert command in main.commands, f"`chatbus {command}` is not a CLI command"


COMPONENTS = {
    "chatbus-gateway": "gateway",
    "chatbus-processors": "processors",
    "chatbus-worker": "worker",
    "chatbus-archiver": "archiver",
    "chatbus-ledger": "ledger",
}


@pytest.mark.parametrize(("name", "component"), COMPONENTS.items())
def test_each_component_runs_the_image_of_its_own_extra(
    main_docs: list[dict[str, Any]], name: str, component: str
) -> None:
    """infra/k8s/Containerfile builds ``chatbus-<component>`` with ``chatbus[<component>]``."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (c,) = pod_spec(find(main_docs, "Deployment", name))["containers"]
    assert c["image"] == f"registry.example.com/chatbus-{component}:0.1.0"
    assert component in extras, f"pyproject.toml has no extra {component!r}"


@pytest.mark.parametrize("name", COMPONENTS)
def test_probes_and_scrape_annotations(
    main_docs: list[dict[str, Any]], settings: Settings, name: str
) -> None:
    doc = find(main_docs, "Deployment", name)
    template = doc["spec"]["template"]
    (c,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expected = settings.gateway.port if name == "chatbus-gateway" else settings.metrics_port
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c.get("startupProbe", {"httpGet": {"path": "/readyz"}})["httpGet"]["path"] in {
        "/readyz",
        "/livez",
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in c:
            assert ports[c[probe]["httpGet"]["port"]] == expected, (name, probe)
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(expected)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == COMPONENTS[name]


def test_selectors_match_their_pods(
    main_docs: list[dict[str, Any]], example_docs: list[dict[str, Any]]
) -> None:
    for docs in (main_docs, example_docs):
        pods = [
            d["spec"]["template"]["metadata"]["labels"]
            for d in docs
            if d["kind"] in {"Deployment", "StatefulSet"}
        ]
        for d in docs:
            if d["kind"] in {"Deployment", "StatefulSet"}:
                wanted = d["spec"]["selector"]["matchLabels"]
                assert wanted.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            if d["kind"] in {"PodDisruptionBudget", "Service"}:
                selector = d["spec"]["selector"]
                selector = selector.get("matchLabels", selector)
                matched = [p for p in pods if selector.items() <= p.items()]
                assert len(matched) == 1, (
                    f"{d['kind']}/{d['metadata']['name']} selects {len(matched)} workloads"
                )


def test_every_deployment_has_a_disruption_budget(main_docs: list[dict[str, Any]]) -> None:
    budgets = {d["metadata"]["name"] for d in main_docs if d["kind"] == "PodDisruptionBudget"}
    assert {d["metadata"]["name"] for d in main_docs if d["kind"] == "Deployment"} <= budgets


def test_the_gateway_service_reaches_the_http_port(main_docs: list[dict[str, Any]]) -> None:
    service = find(main_docs, "Service", "chatbus-gateway")
    (c,) = pod_spec(find(main_docs, "Deployment", "chatbus-gateway"))["containers"]
    names = {p["name"] for p in c["ports"]}
    assert all(p["targetPort"] in names for p in service["spec"]["ports"])
    assert c["command"][-2:] == ["--host", "0.0.0.0"]


def _worker_drain_timeout() -> float:
    """Default ``drain_timeout_s`` of ``InferenceWorker.stop`` (read without importing torch)."""
    tree = ast.parse((ROOT / "inference_consumers" / "worker.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef) and node.name == "stop":
            args = node.args
            for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                if (
                    arg.arg == "drain_timeout_s"
                    and isinstance(default, ast.Constant)
                    and isinstance(default.value, int | float)
                ):
                    return float(default.value)
    pytest.fail("InferenceWorker.stop(drain_timeout_s=...) not found")


def test_the_worker_runs_on_a_gpu_and_has_time_to_drain(main_docs: list[dict[str, Any]]) -> None:
    worker = find(main_docs, "Deployment", "chatbus-worker")
    spec = pod_spec(worker)
    (c,) = spec["containers"]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    requested = c["resources"].get("requests", {}).get("nvidia.com/gpu")
    assert requested is None or int(requested) == 1  # extended resources: requests == limits
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["nodeSelector"]
    # drain (finish or hand over), then commit and leave the group, within the grace period
    assert spec["terminationGracePeriodSeconds"] >= _worker_drain_timeout() + 30
    assert "replicas" not in worker["spec"], "KEDA's HPA owns the worker's replicas"
    assert {e["name"]: e for e in c["env"]}["CHATBUS_WORKER_ID"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.name"
    }


def test_replicas_fit_the_partitions(main_docs: list[dict[str, Any]], settings: Settings) -> None:
    for name in ("chatbus-gateway", "chatbus-processors", "chatbus-archiver", "chatbus-ledger"):
        assert (
            find(main_docs, "Deployment", name)["spec"]["replicas"]
            <= settings.kafka.topic_partitions
        )


def test_the_scaledobject_targets_the_worker_group_and_topic(
    main_docs: list[dict[str, Any]], settings: Settings
) -> None:
    from inference_consumers.worker import group_id_for

    scaled = find(main_docs, "ScaledObject", "chatbus-worker")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "chatbus-worker",
    }
    find(main_docs, "Deployment", scaled["scaleTargetRef"]["name"])
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == group_id_for(settings, settings.model.name)
    assert meta["topic"] == settings.topic(settings.worker.input_topic)
    assert meta["bootstrapServers"] == settings.kafka.bootstrap
    # a member beyond the partition count gets no partition
    assert (
        1
        <= scaled["minReplicaCount"]
        <= scaled["maxReplicaCount"]
        <= settings.kafka.topic_partitions
    )
    # in-flight requests are uncommitted, so they are lag too: the threshold must exceed them
    assert int(meta["lagThreshold"]) > settings.worker.max_inflight
    assert meta["offsetResetPolicy"] == "earliest"  # chatbus/kafka/factories.py's auto_offset_reset


def test_the_kafka_trigger_metadata_is_what_keda_reads(main_docs: list[dict[str, Any]]) -> None:
    params = json.loads((SCHEMAS / "keda_kafka_trigger_metadata.json").read_text())["parameters"]
    (trigger,) = find(main_docs, "ScaledObject", "chatbus-worker")["spec"]["triggers"]
    meta = trigger["metadata"]
    assert set(meta) <= set(params), f"unknown kafka trigger parameters: {set(meta) - set(params)}"
    assert {n for n, p in params.items() if p["required"]} <= set(meta)
    for name, value in meta.items():
        spec = params[name]
        if spec["enum"]:
            assert value in spec["enum"], name
        if spec["go_type"] == "int64":
            int(value)
        if spec["go_type"] == "bool":
            assert value in {"true", "false"}, name


# --- the examples: a multi-broker Kafka and a MongoDB replica set -----------------------------
def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_kafka_example_is_three_replicated_brokers(
    example_docs: list[dict[str, Any]], settings: Settings
) -> None:
    kafka = find(example_docs, "StatefulSet", "kafka")
    (c,) = pod_spec(kafka)["containers"]
    env = _env(c)
    brokers = kafka["spec"]["replicas"]
    assert brokers == 3
    assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
    assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
    assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == brokers
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16  # a KRaft cluster id
    namespace = kafka["metadata"]["namespace"]
    hosts = [f"kafka-{i}.kafka.{namespace}.svc.cluster.local:9092" for i in range(brokers)]
    assert settings.kafka.bootstrap.split(",") == hosts  # the ConfigMap points at them
    assert settings.kafka.topic_replication <= brokers


def test_the_mongodb_example_is_a_three_member_replica_set(
    example_docs: list[dict[str, Any]], settings: Settings
) -> None:
    mongo = find(example_docs, "StatefulSet", "mongodb")
    (c,) = pod_spec(mongo)["containers"]
    assert mongo["spec"]["replicas"] == 3
    args = c["args"]
    replica_set = args[args.index("--replSet") + 1]
    url = settings.mongo.url.get_secret_value()
    namespace = mongo["metadata"]["namespace"]
    for i in range(3):
        assert f"mongodb-{i}.mongodb.{namespace}.svc.cluster.local:27017" in url
    assert f"replicaSet={replica_set}" in url
    assert "w=majority" in url
    script = find(example_docs, "ConfigMap", "mongodb-init")["data"]["initiate.js"]
    assert f'_id: "{replica_set}"' in script
