"""The chart keeps the gateway's metrics port off the Ingress path.

Renders the chart (needs `helm`, as tests/helm does; skipped without it outside CI) in each of
the helm-check renders and checks the gateway's Deployment, Service, Ingress, NetworkPolicy and
ServiceMonitor agree: the Ingress reaches only the http port, scrapers only the metrics port.
"""

from __future__ import annotations

from typing import Any

import pytest

from scripts.helm_check import RENDERS, Render, render
from tests.helm.test_chart import _helm


@pytest.fixture(scope="module", params=RENDERS, ids=[r.name for r in RENDERS])
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    spec: Render = request.param
    return render(_helm(), spec)


def _gateway(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"
    ]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_gateway_metrics_on_their_own_port_not_behind_the_ingress(
    objects: list[dict[str, Any]],
) -> None:
    (deployment,) = _gateway(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = _env(container)
    assert int(env["LANGERHANS_METRICS_PORT"]) == ports["metrics"]
    assert int(env["LANGERHANS_HTTP_PORT"]) == ports["http"]
    assert ports["metrics"] != ports["http"]

    (service,) = _gateway(objects, "Service")
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert targets == {"http": "http", "metrics": "metrics"}
    for ingress in _gateway(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["port"] == {"name": "http"}

    for monitor in _gateway(objects, "ServiceMonitor"):
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]

    for policy in _gateway(objects, "NetworkPolicy"):
        admitted: dict[int, list[Any]] = {}
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                admitted.setdefault(port["port"], []).extend(rule["from"])
        assert set(admitted) == {ports["http"], ports["metrics"]}
        # The metrics port admits only the monitoring peers, never the ingress controllers.
        assert not any(peer in admitted[ports["http"]] for peer in admitted[ports["metrics"]])
