"""The generated code beside the protos is exactly what the generator produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.contracts.conftest import PROTO_ROOT, REPO_ROOT

SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _generated(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name.endswith(SUFFIXES)
    }


def _generate_into(out: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_proto.py"), "--out", str(out), "--quiet"],
        check=True,
    )


def test_regenerating_gives_the_files_present(tmp_path: Path) -> None:
    _generate_into(tmp_path)
    fresh = _generated(tmp_path)
    present = _generated(PROTO_ROOT)
    assert fresh, "the generator produced nothing"
    missing = sorted(fresh.keys() - present.keys())
    stale = sorted(present.keys() - fresh.keys())
    changed = sorted(k for k in fresh.keys() & present.keys() if fresh[k] != present[k])
    assert (missing, stale, changed) == ([], [], []), "generated code drifted: run `make proto`"


def test_generation_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    _generate_into(tmp_path)
    first = _generated(tmp_path)
    # Second run into the same folder: nothing rewritten, same bytes.
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    _generate_into(tmp_path)
    assert _generated(tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
