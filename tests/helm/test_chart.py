"""The Helm chart renders to hardened, probed, closed-by-default workloads.

Needs `helm` (`make helm-check` installs it with go install). Outside CI a missing helm skips
these tests; with CI=true it fails them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.helm_check import CHART, RENDERS, Render, render, validate_objects
from services.runtime.migrations import default_versions_dir
from services.runtime.topics import DLQ_RETENTION_MS, TOPICS

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("device-gateway", "cgm-ingestion", "dosing-engine", "alerts", "gateway")
VALUE_KEYS = {
    "device-gateway": "deviceGateway",
    "cgm-ingestion": "cgmIngestion",
    "dosing-engine": "dosingEngine",
    "alerts": "alerts",
    "gateway": "gateway",
}


def _helm() -> str:
    found = os.environ.get("HELM") or shutil.which("helm")
    if not found:
        gopath = subprocess.run(
            ["go", "env", "GOPATH"], capture_output=True, text=True, check=False
        ).stdout.strip()
        candidate = Path(gopath or Path.home() / "go") / "bin" / "helm"
        found = str(candidate) if candidate.exists() else None
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("helm is not installed (make helm-check installs it); required in CI")
        pytest.skip("helm is not installed; run make helm-check")
    return found


@pytest.fixture(scope="module")
def helm() -> str:
    return _helm()


@pytest.fixture(scope="module", params=RENDERS, ids=[r.name for r in RENDERS])
def objects(request: pytest.FixtureRequest, helm: str) -> list[dict[str, Any]]:
    spec: Render = request.param
    return render(helm, spec)


def _kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    ]


def test_every_container_is_non_root_read_only_and_drops_all(objects):
    pods = _pod_specs(objects)
    assert pods
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["runAsUser"] > 0, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx["capabilities"].get("add"), name
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name
        # Read-only root: the one writable place is an emptyDir at /tmp.
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_every_deployment_has_probes_resources_pdb_and_checksum(objects):
    deployments = _kind(objects, "Deployment")
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments} == set(
        SERVICES
    )
    pdb_selectors = [
        p["spec"]["selector"]["matchLabels"] for p in _kind(objects, "PodDisruptionBudget")
    ]
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["serve", component]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe in container, f"{name} has no {probe}"
            if component != "gateway":
                # Native gRPC probe on the health service, not an exec of a probe binary.
                assert set(container[probe]) >= {"grpc"}, f"{name} {probe} is not gRPC"
        assert container["resources"]["requests"]["cpu"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector in pdb_selectors, f"{name} has no PodDisruptionBudget"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert len(annotations["checksum/config"]) == 64
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_network_policies_deny_by_default_and_allow_dependencies(objects):
    policies = _kind(objects, "NetworkPolicy")
    deny = [p for p in policies if p["metadata"]["name"].endswith("-default-deny")]
    assert len(deny) == 1
    spec = deny[0]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in spec
    assert "egress" not in spec
    # Every Deployment is covered by the default deny and has its own explicit policy.
    by_component = {
        p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component"): p
        for p in policies
    }
    for deployment in _kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in spec["podSelector"]["matchLabels"].items())
        policy = by_component[labels["app.kubernetes.io/component"]]
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {53, 5432} <= egress_ports
        assert egress_ports & {9092, 9093}


def test_grpc_services_admit_only_the_gateway_and_scrapers(objects):
    policies = {p["metadata"]["name"]: p for p in _kind(objects, "NetworkPolicy")}
    for component in ("cgm-ingestion", "dosing-engine", "alerts"):
        policy = policies[f"lh-langerhans-{component}"]
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert "ipBlock" not in peer, f"{component} is open to addresses"
                if "podSelector" in peer:
                    labels = peer["podSelector"]["matchLabels"]
                    assert labels["app.kubernetes.io/component"] == "gateway"


def test_mtls_connect_is_passed_through_to_the_pod(objects):
    services = {s["metadata"]["name"]: s for s in _kind(objects, "Service")}
    hubs = services["lh-langerhans-device-gateway-hubs"]
    assert hubs["spec"]["type"] in ("LoadBalancer", "NodePort")
    assert {p["name"] for p in hubs["spec"]["ports"]} == {"hub", "enroll"}
    # No Ingress routes hub traffic (it would terminate TLS).
    for ingress in _kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "lh-langerhans-gateway"


def test_signing_key_reaches_only_the_dosing_engine(objects):
    for deployment in _kind(objects, "Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            secret = volume.get("secret", {})
            if "command-signing" not in secret.get("secretName", ""):
                continue
            # An absent or empty `items` would project every key, the private one included.
            keys = {item["key"] for item in secret.get("items") or [{"key": "signing-key.pem"}]}
            if component == "dosing-engine":
                assert keys == {"signing-key.pem"}
            else:
                assert "signing-key.pem" not in keys, component


def test_migration_and_topic_jobs_run_before_install_and_upgrade(objects):
    jobs = {j["metadata"]["name"]: j for j in _kind(objects, "Job")}
    strimzi = bool(_kind(objects, "Kafka"))
    migrated = [s for s in SERVICES if default_versions_dir(s).is_dir()]
    assert {n for n in jobs if "-migrate-" in n} == {f"lh-langerhans-migrate-{s}" for s in migrated}
    for component in migrated:
        job = jobs[f"lh-langerhans-migrate-{component}"]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate", component]
    if strimzi:
        assert "lh-langerhans-topics" not in jobs
        assert len(_kind(objects, "KafkaTopic")) == 2 * len(TOPICS)
    else:
        topics = jobs["lh-langerhans-topics"]
        assert topics["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics"]


def test_rendered_objects_are_valid_kubernetes(objects):
    assert validate_objects(objects, "1.33.0") == []


def test_a_wrong_field_is_caught_by_schema_validation(helm):
    broken = render(helm, Render("default"))
    deployment = next(o for o in broken if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prt"] = 1
    assert validate_objects([deployment], "1.33.0")


def test_values_schema_rejects_a_typo(helm):
    result = subprocess.run(
        [
            helm,
            "template",
            "lh",
            str(CHART),
            "--kube-version",
            "1.33.0",
            "--set",
            "gateway.replicaCnt=3",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "replicaCnt" in result.stderr


def test_disabled_service_renders_nothing(helm):
    objs = render(helm, Render("no-alerts", (), ("alerts.enabled=false",)))
    assert not [o for o in objs if "alerts" in o["metadata"]["name"].removesuffix("-deliveries")]
    assert len(_kind(objs, "Deployment")) == len(SERVICES) - 1


def test_topic_values_match_the_declared_topics():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    topics = values["kafka"]["topics"]
    assert topics["replication"] == 3
    assert topics["minInsyncReplicas"] == 2
    assert topics["partitions"] == {spec.name: spec.partitions for spec in TOPICS}
    configs = topics["configs"]
    assert configs["dlq"]["retention.ms"] == str(DLQ_RETENTION_MS)
    for spec in TOPICS:
        merged = {**configs["default"], **configs["overrides"].get(spec.name, {})}
        declared = spec.configs(replication=3)
        for key, value in merged.items():
            assert declared[key] == value, f"{spec.name} {key}"


def _undocumented(text: str) -> list[str]:
    """Keys of mappings (not inside lists) with no comment above them or on their line."""
    lines = text.splitlines()
    missing: list[str] = []

    def walk(node: yaml.Node, path: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            line = key.start_mark.line
            above = lines[line - 1].strip() if line > 0 else ""
            if not above.startswith("#") and "#" not in lines[line]:
                missing.append(f"{path}{key.value} (line {line + 1})")
            walk(value, f"{path}{key.value}.")

    root = yaml.compose(text)
    assert root is not None
    walk(root, "")
    return missing


@pytest.mark.parametrize("values_file", ["values.yaml"])
def test_every_value_is_documented(values_file):
    text = (CHART / values_file).read_text()
    assert _undocumented(text) == []
    assert _undocumented("a: 1\n# b\nb: 2\n") == ["a (line 1)"]


def test_standalone_alert_rules_match_the_chart(helm):
    objs = render(helm, Render("rules", (), ("monitoring.prometheusRule.enabled=true",)))
    (rule,) = _kind(objs, "PrometheusRule")
    standalone = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert standalone["kind"] == "PrometheusRule"
    assert standalone["spec"] == rule["spec"]
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "LangerhansConsumerLagHigh",
        "LangerhansNotLoopingRateHigh",
        "LangerhansCommandExpiryRateHigh",
        "LangerhansDeadLettersGrowing",
        "LangerhansServiceDown",
    } <= names


def test_dashboard_queries_only_documented_metrics():
    dashboard = json.loads(
        (REPO_ROOT / "deploy" / "grafana" / "langerhans-dashboard.json").read_text()
    )
    documented = (REPO_ROOT / "docs" / "observability.md").read_text()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        for metric in re.findall(r"\b((?:langerhans|grpc_server|gateway_http)_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert f"`{base}`" in documented, f"{base} is not listed in docs/observability.md"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for needed in ("lag", "latency", "decisions", "commands", "alerts", "not looping", "grpc"):
        assert needed in titles


def test_security_check_finds_an_unjustified_finding(helm, tmp_path):
    checkov = REPO_ROOT / "var" / "tools" / "checkov" / "bin" / "checkov"
    if not checkov.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("checkov is not installed (make helm-check installs it)")
        pytest.skip("checkov is not installed; run make helm-check")
    from scripts.helm_check import checkov_failures

    # Without the justified exceptions the image-digest and env-secret findings come back.
    objs = render(helm, Render("no-exceptions", (), ("securityCheckExceptions=null",)))
    manifests = tmp_path / "rendered.yaml"
    manifests.write_text(yaml.safe_dump_all(objs))
    failures = checkov_failures(str(checkov), manifests)
    assert any(f.startswith("CKV_K8S_43 Deployment") for f in failures)
    justified = render(helm, Render("default"))
    manifests.write_text(yaml.safe_dump_all(justified))
    assert checkov_failures(str(checkov), manifests) == []
