"""The image's build steps work: deploy/Dockerfile's RUN lines, executed in clean virtualenvs.

No container engine exists here, so the builder stage's commands are taken from the Dockerfile
itself and run against a clean copy of the tracked sources (paths under /opt and /wheels moved
into a temporary directory; apt-get skipped). The result must install, carry the compiled
kernels and the generated code, and answer `langerhans --help` from outside the source tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"


def _instructions(stage: str) -> list[tuple[str, str]]:
    """(instruction, arguments) of one stage, with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[tuple[str, str]] = []
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            current = rest.split(" AS ")[-1].strip()
            continue
        if current == stage:
            result.append((word.upper(), rest.strip()))
    return result


def test_runtime_stage_is_non_root_with_the_cli_as_entrypoint():
    runtime = dict(_instructions("runtime"))
    assert runtime["USER"] == "10001:10001"
    assert runtime["ENTRYPOINT"] == '["langerhans"]'
    assert runtime["CMD"] == '["serve", "gateway"]'
    copies = [args for word, args in _instructions("runtime") if word == "COPY"]
    # Only the runtime virtualenv crosses over: no compiler, no build tools, no sources.
    assert copies == ["--from=builder /opt/venv /opt/venv"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_builder_steps_produce_a_working_install(tmp_path):
    src = tmp_path / "src"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    ignored = ("tests/", "bench/", "helm/", "docs/img/", "deploy/kafka/lib/")
    for name in (t.decode() for t in tracked if t):
        if name.startswith(ignored) or not (REPO_ROOT / name).is_file():
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, src / name)
    assert not list(src.rglob("*_pb2.py")), "generated code must not be in the clean copy"

    moved = {
        "/opt/build": str(tmp_path / "build-venv"),
        "/opt/venv": str(tmp_path / "venv"),
        "/wheels": str(tmp_path / "wheels"),
        "/var/lib/langerhans": str(tmp_path / "state"),
    }
    (tmp_path / "state").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    # The build venvs come from the base interpreter, never from the project's .venv.
    base_python = str(Path(sys.base_prefix) / "bin" / "python3")
    ran = 0
    for word, args in _instructions("builder"):
        if word != "RUN" or "apt-get" in args:
            continue
        command = args
        for old, new in moved.items():
            command = command.replace(old, new)
        command = re.sub(r"(^|&& )python -m venv", rf"\1{base_python} -m venv", command)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        ran += 1
    assert ran >= 5

    venv_bin = tmp_path / "venv" / "bin"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    help_text = subprocess.run(
        [str(venv_bin / "langerhans"), "--help"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "serve" in help_text
    probe = (
        "import pathlib, kernels, services, langerhans.device.v1.device_pb2 as d;"
        "so = list(pathlib.Path(kernels.__path__[0]).rglob('_*.so'));"
        "assert so, 'no compiled kernels';"
        "assert 'site-packages' in services.__path__[0];"
        "print(len(so), d.__name__)"
    )
    out = subprocess.run(
        [str(venv_bin / "python"), "-c", probe],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    # Build tools stayed in the builder.
    for tool in ("cython", "grpc_tools", "mypy_protobuf"):
        found = subprocess.run(
            [str(venv_bin / "python"), "-c", f"import {tool}"],
            cwd=outside,
            capture_output=True,
            check=False,
        )
        assert found.returncode != 0, f"{tool} leaked into the runtime virtualenv"
