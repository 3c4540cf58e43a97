"""`make helm-check`: lint, render, validate offline and security-check the Helm chart.

    python scripts/helm_check.py [--helm PATH] [--checkov PATH] [--kube-version 1.33.0]

1. `helm lint --strict` with the default and the production example values;
2. `helm template` for several value sets (default, production, Strimzi + monitoring);
3. every rendered object validated (strict: unknown fields fail) against the Kubernetes JSON
   schemas shipped by `kubernetes-validate` (offline); custom resources (Strimzi,
   Prometheus Operator) have no schema there and get a structural check;
4. checkov's Kubernetes checks on the rendered manifests: zero failures, or a skip that is
   justified in values (`securityCheckExceptions`).
Exits non-zero on the first failing step, saying which and why.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml

__all__ = ["CHART", "CUSTOM_KINDS", "RENDERS", "main", "render", "validate_objects"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = REPO_ROOT / "helm" / "langerhans"
KUBE_VERSION = "1.33.0"

# Custom resources: kind -> API group; validated structurally (their CRD schemas are not in
# kubernetes-validate and the operators are not installed here).
CUSTOM_KINDS: dict[str, str] = {
    "Kafka": "kafka.strimzi.io",
    "KafkaNodePool": "kafka.strimzi.io",
    "KafkaTopic": "kafka.strimzi.io",
    "ServiceMonitor": "monitoring.coreos.com",
    "PrometheusRule": "monitoring.coreos.com",
}


@dataclass(frozen=True)
class Render:
    name: str
    values_files: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()


RENDERS: tuple[Render, ...] = (
    Render("default"),
    Render("production", ("values-production.yaml",)),
    Render(
        "strimzi-monitoring",
        (),
        (
            "kafka.strimzi.enabled=true",
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
        ),
    ),
)


def _run(args: Sequence[str], what: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CheckError(f"{what} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


class CheckError(Exception):
    """A check failed; the message says which and why."""


def render(helm: str, spec: Render, kube_version: str = KUBE_VERSION) -> list[dict[str, Any]]:
    """`helm template` of the chart with `spec`'s values; the rendered objects."""
    args = [helm, "template", "lh", str(CHART), "--namespace", "langerhans"]
    args += ["--kube-version", kube_version]
    for values in spec.values_files:
        args += ["-f", str(CHART / values)]
    for assignment in spec.sets:
        args += ["--set", assignment]
    out = _run(args, f"helm template ({spec.name})")
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _custom_problems(obj: dict[str, Any]) -> Iterator[str]:
    group = CUSTOM_KINDS[obj["kind"]]
    if not str(obj.get("apiVersion", "")).startswith(group + "/"):
        yield f"apiVersion {obj.get('apiVersion')!r} is not in {group}"
    if not obj.get("metadata", {}).get("name"):
        yield "metadata.name missing"
    if not isinstance(obj.get("spec"), dict) or not obj["spec"]:
        yield "spec missing"


def validate_objects(objects: Sequence[dict[str, Any]], kube_version: str) -> list[str]:
    """Problems of each object against the Kubernetes schemas (strict); empty means valid."""
    problems: list[str] = []
    for obj in objects:
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("kind") in CUSTOM_KINDS:
            problems += [f"{label}: {p}" for p in _custom_problems(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            problems.append(f"{label}: {path}: {error.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError):
            problems.append(f"{label}: no Kubernetes schema for {obj.get('apiVersion')}")
    return problems


def checkov_failures(checkov: str, manifests: Path) -> list[str]:
    """Failed checkov Kubernetes checks on `manifests` (skips come from annotations)."""
    result = subprocess.run(
        [checkov, "-f", str(manifests), "--framework", "kubernetes", "-o", "json", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(result.stdout or "{}")
    except json.JSONDecodeError as error:
        raise CheckError(f"checkov output unreadable: {result.stderr[-2000:]}") from error
    reports = report if isinstance(report, list) else [report]
    failures: list[str] = []
    for rep in reports:
        for check in rep.get("results", {}).get("failed_checks", []):
            failures.append(f"{check['check_id']} {check['resource']}: {check['check_name']}")
    if result.returncode not in (0, 1):
        raise CheckError(f"checkov exited with {result.returncode}: {result.stderr[-2000:]}")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", default=shutil.which("helm") or "helm")
    parser.add_argument("--checkov", default=None, help="checkov executable; omit to skip")
    parser.add_argument("--kube-version", default=KUBE_VERSION)
    args = parser.parse_args(argv)
    try:
        for values in ((), ("values-production.yaml",)):
            extra = [arg for v in values for arg in ("-f", str(CHART / v))]
            _run([args.helm, "lint", "--strict", str(CHART), *extra], "helm lint")
            print(f"helm-check: helm lint --strict ok ({values[0] if values else 'defaults'})")
        with tempfile.TemporaryDirectory() as tmp:
            for spec in RENDERS:
                objects = render(args.helm, spec, args.kube_version)
                problems = validate_objects(objects, args.kube_version)
                if problems:
                    raise CheckError(
                        f"schema validation ({spec.name}):\n  " + "\n  ".join(problems)
                    )
                kinds = sorted({o["kind"] for o in objects})
                print(
                    f"helm-check: {spec.name}: {len(objects)} objects valid against "
                    f"Kubernetes {args.kube_version} ({', '.join(kinds)})"
                )
                if args.checkov:
                    manifests = Path(tmp) / f"{spec.name}.yaml"
                    manifests.write_text(yaml.safe_dump_all(objects))
                    failures = checkov_failures(args.checkov, manifests)
                    if failures:
                        raise CheckError(
                            f"checkov ({spec.name}): {len(failures)} failed checks:\n  "
                            + "\n  ".join(failures)
                        )
                    print(f"helm-check: {spec.name}: checkov 0 failed checks")
    except CheckError as error:
        print(f"helm-check: FAILED: {error}", file=sys.stderr)
        return 1
    if not args.checkov:
        print("helm-check: checkov skipped (no --checkov)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
