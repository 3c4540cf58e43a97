"""Generate Python code, gRPC stubs and .pyi type stubs from every .proto under proto/.

Output goes beside the .proto files (git-ignored), so `langerhans.<domain>.v1.<file>_pb2` imports
with proto/ on sys.path. Deterministic and idempotent: protoc runs once over the sorted list of
files, and a file is rewritten only when its content changed.

    python scripts/gen_proto.py [--out DIR] [--quiet]

`--out` writes into another directory instead (the drift test regenerates into a temp dir and
compares).
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["GENERATED_SUFFIXES", "PROTO_ROOT", "generate", "main", "proto_files"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto file under `root`, relative to it, sorted for a stable protoc invocation."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def _plugin(name: str) -> Path:
    # The mypy-protobuf plugins are installed beside this interpreter in the virtualenv.
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise SystemExit(f"{name} not found: install mypy-protobuf (pip install -e '.[dev]')")
        path = Path(found)
    return path


def _run_protoc(files: list[Path], out_dir: Path) -> None:
    # The well-known types (google/protobuf/*.proto) ship inside grpcio-tools.
    wkt_include = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    args = [
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={wkt_include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(f) for f in files),
    ]
    # A subprocess keeps protoc's global state out of this process; the mypy plugins chatter on
    # stderr, which is shown only when protoc fails.
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args],
        cwd=PROTO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"protoc failed with exit code {result.returncode}")


def generate(out_dir: Path = PROTO_ROOT, *, quiet: bool = False) -> list[Path]:
    """Generate code for every proto into `out_dir`; return the files written or changed.

    Generated files in `out_dir` that no proto produces any more are deleted.
    """
    files = proto_files()
    if not files:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}")
    changed: list[Path] = []
    removed: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="langerhans-proto-") as tmp:
        tmp_dir = Path(tmp)
        _run_protoc(files, tmp_dir)
        for produced in sorted(p for p in tmp_dir.rglob("*") if p.is_file()):
            rel = produced.relative_to(tmp_dir)
            target = out_dir / rel
            if target.exists() and filecmp.cmp(produced, target, shallow=False):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(produced, target)
            changed.append(rel)
        # Code generated from a .proto that no longer exists would still import: remove it.
        produced_names = {p.relative_to(tmp_dir) for p in tmp_dir.rglob("*") if p.is_file()}
        for existing in sorted(out_dir.rglob("*")):
            rel = existing.relative_to(out_dir)
            if existing.name.endswith(GENERATED_SUFFIXES) and rel not in produced_names:
                existing.unlink()
                removed.append(rel)
    if not quiet:
        for rel in changed:
            print(f"generated {out_dir / rel}")
        for rel in removed:
            print(f"removed stale {out_dir / rel}")
        print(
            f"{len(files)} proto files: {len(changed)} generated files written, "
            f"{len(removed)} stale removed"
        )
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output directory")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    generate(args.out, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
