"""Shared helpers for the contract tests: the proto tree and a descriptor set with comments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"


def proto_paths() -> list[Path]:
    return sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))


@pytest.fixture(scope="session")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    """Every Langerhans proto compiled by protoc, with source info (comments) kept."""
    import importlib.resources

    out = tmp_path_factory.mktemp("descriptors") / "set.binpb"
    wkt = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={wkt}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(p) for p in proto_paths()),
        ],
        check=True,
        cwd=PROTO_ROOT,
    )
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
