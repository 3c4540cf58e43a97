"""Supply-chain checks: CycloneDX SBOM, bandit, pip-audit (`make supply-chain`).

The tools live in their own virtualenv (var/tools/supply-chain, made by the Makefile) so they
do not join the project's dependencies. Outputs:

- var/sbom.json: CycloneDX 1.6 SBOM of the project's virtualenv (every installed package);
- var/bandit.json: bandit over the source (not tests or benchmarks). A HIGH-severity finding
  fails the run unless it carries an inline `# nosec <id> <reason>`;
- var/pip-audit.json: known vulnerabilities of the pinned environment. pip-audit needs its
  vulnerability data from the network; when that cannot be reached the run says so plainly and
  does not fail (a finding it *can* report does fail it).

Ends with `RESULT supply_chain sbom_components=… bandit_high=… bandit_medium=… vulns=…`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ["kernels", "services", "gateway", "edge", "sim", "scripts"]
# Generated protobuf code is excluded: it is produced by protoc, not written here.
BANDIT_EXCLUDES = ["proto", ".venv", "var", "build", "tests", "bench"]
NETWORK_HINTS = (
    "connection",
    "timed out",
    "name resolution",
    "max retries",
    "temporary failure",
    "network is unreachable",
    "proxy",
    "ssl",
)


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO_ROOT, text=True, capture_output=True, check=False, **kwargs
    )


def sbom(tools: Path, python: Path, out: Path) -> int:
    """CycloneDX SBOM of the environment `python` runs in; returns the component count."""
    result = _run(
        [
            str(tools / "cyclonedx-py"),
            "environment",
            "--pyproject",
            "pyproject.toml",
            "--output-reproducible",
            "--of",
            "JSON",
            "-o",
            str(out),
            str(python),
        ]
    )
    if result.returncode != 0:
        raise SystemExit(f"SBOM generation failed:\n{result.stdout}{result.stderr}")
    document = json.loads(out.read_text())
    components = len(document.get("components", []))
    print(f"sbom: {components} components, CycloneDX {document.get('specVersion')} -> {out}")
    return components


def bandit(tools: Path, out: Path) -> tuple[int, int, list[str]]:
    """bandit over the source; returns (high, medium, descriptions of high findings)."""
    out.unlink(missing_ok=True)
    result = _run(
        [
            str(tools / "bandit"),
            "-r",
            *SOURCE_DIRS,
            "-x",
            ",".join(BANDIT_EXCLUDES),
            "-f",
            "json",
            "-o",
            str(out),
            "-q",
        ]
    )
    if not out.exists():
        raise SystemExit(f"bandit did not run:\n{result.stdout}{result.stderr}")
    report = json.loads(out.read_text())
    errors = report.get("errors", [])
    if errors:
        raise SystemExit(f"bandit could not parse some files: {errors}")
    findings = report.get("results", [])
    by_severity = Counter(f["issue_severity"] for f in findings)
    high = [
        f"{f['filename']}:{f['line_number']} {f['test_id']} {f['issue_text']}"
        for f in findings
        if f["issue_severity"] == "HIGH"
    ]
    skipped = report.get("metrics", {}).get("_totals", {}).get("skipped_tests", 0)
    print(
        f"bandit: HIGH {by_severity['HIGH']}, MEDIUM {by_severity['MEDIUM']}, "
        f"LOW {by_severity['LOW']}; {skipped} justified inline (# nosec) -> {out}"
    )
    for finding in findings:
        if finding["issue_severity"] in {"HIGH", "MEDIUM"}:
            print(
                f"  {finding['issue_severity']:<6} {finding['test_id']} "
                f"{finding['filename']}:{finding['line_number']} {finding['issue_text']}"
            )
    return by_severity["HIGH"], by_severity["MEDIUM"], high


def pip_audit(tools: Path, python: Path, out: Path) -> int | None:
    """Known vulnerabilities of the pinned environment; None when the data is unreachable."""
    out.unlink(missing_ok=True)  # a report from an earlier run must not pass for this one
    frozen = _run([str(python), "-m", "pip", "freeze", "--exclude-editable", "--all"])
    requirements = out.with_suffix(".requirements.txt")
    requirements.write_text(
        "\n".join(
            line
            for line in frozen.stdout.splitlines()
            if "==" in line and not line.startswith(("-e", "#"))
        )
        + "\n"
    )
    result = _run(
        [
            str(tools / "pip-audit"),
            "-r",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--timeout",
            "20",
            "-f",
            "json",
            "-o",
            str(out),
        ]
    )
    if not out.exists() or not out.read_text().strip():
        text = (result.stderr + result.stdout).lower()
        reason = "network" if any(hint in text for hint in NETWORK_HINTS) else "error"
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        if reason == "network":
            print(
                "pip-audit: NOT CHECKED - its vulnerability data could not be reached from "
                f"this machine; run `make supply-chain` where it can.\n  {tail}"
            )
            return None
        raise SystemExit(f"pip-audit failed:\n{result.stdout}{result.stderr}")
    report = json.loads(out.read_text())
    dependencies = report.get("dependencies", report if isinstance(report, list) else [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    count = sum(len(d["vulns"]) for d in vulnerable)
    print(f"pip-audit: {len(dependencies)} packages, {count} known vulnerabilities -> {out}")
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            name, version = dependency["name"], dependency["version"]
            print(f"  {name} {version}: {vuln['id']} (fixed in {fixes})")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=Path, required=True, help="bin/ of the tools' venv")
    parser.add_argument("--python", type=Path, default=REPO_ROOT / ".venv" / "bin" / "python")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "var")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    components = sbom(args.tools, args.python, args.out / "sbom.json")
    high, medium, high_findings = bandit(args.tools, args.out / "bandit.json")
    vulns = pip_audit(args.tools, args.python, args.out / "pip-audit.json")

    failures = []
    if high_findings:
        failures.append(
            "HIGH-severity bandit findings without a justification (fix them, or add "
            "`# nosec <id> <reason>` on the line): " + "; ".join(high_findings)
        )
    if vulns:
        failures.append(f"{vulns} known vulnerabilities in installed packages (see above)")
    vuln_figure = "unchecked" if vulns is None else str(vulns)
    print(
        f"RESULT supply_chain sbom_components={components} bandit_high={high} "
        f"bandit_medium={medium} vulns={vuln_figure}"
    )
    for failure in failures:
        print(f"supply-chain: FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
