"""The proto tree follows the conventions every service relies on."""

from __future__ import annotations

import importlib
import re

from google.protobuf import descriptor_pb2

from tests.contracts.conftest import PROTO_ROOT, proto_paths

DOMAINS = {"common", "device", "cgm", "pump", "dosing", "alerts"}


def test_every_domain_has_contracts() -> None:
    found = {p.parts[1] for p in proto_paths()}
    assert found >= DOMAINS


def test_package_matches_folder_and_file_names_are_snake_case() -> None:
    for rel in proto_paths():
        assert re.fullmatch(r"langerhans/[a-z_]+/v\d+/[a-z][a-z0-9_]*\.proto", rel.as_posix()), rel
        text = (PROTO_ROOT / rel).read_text(encoding="utf-8")
        packages = re.findall(r"^package\s+([\w.]+)\s*;", text, flags=re.MULTILINE)
        assert packages == [".".join(rel.parts[:-1])], f"{rel}: package {packages}"


def test_generated_modules_import_under_their_package() -> None:
    for rel in proto_paths():
        module_name = ".".join(rel.with_suffix("").parts) + "_pb2"
        module = importlib.import_module(module_name)
        assert module.DESCRIPTOR.name == rel.as_posix()
        assert module.DESCRIPTOR.package == ".".join(rel.parts[:-1])


def _location_comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): loc.leading_comments + loc.trailing_comments
        for loc in file.source_code_info.location
    }


def _undocumented_fields(
    msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], comments: dict[tuple[int, ...], str]
) -> list[str]:
    missing: list[str] = []
    for i, fld in enumerate(msg.field):
        # Oneof members are self-describing (the message type names the case); proto3 `optional`
        # fields sit in a synthetic oneof but still need their comment.
        needs_comment = fld.proto3_optional or not fld.HasField("oneof_index")
        if needs_comment and not comments.get((*path, 2, i), "").strip():
            missing.append(f"{msg.name}.{fld.name}")
    for i, nested in enumerate(msg.nested_type):
        missing.extend(_undocumented_fields(nested, (*path, 3, i), comments))
    return missing


def test_every_field_enum_value_and_rpc_is_documented(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    # Source-info paths use descriptor.proto field numbers: 4 = message_type, 2 = field,
    # 3 = nested_type, 5 = enum_type, 2 = value, 6 = service, 2 = method.
    undocumented: list[str] = []
    for file in descriptor_set.file:
        if not file.package.startswith("langerhans."):
            continue
        comments = _location_comments(file)
        names: list[str] = []
        for i, msg in enumerate(file.message_type):
            names.extend(_undocumented_fields(msg, (4, i), comments))
        for i, enum in enumerate(file.enum_type):
            names.extend(
                f"{enum.name}.{value.name}"
                for j, value in enumerate(enum.value)
                if value.number != 0 and not comments.get((5, i, 2, j), "").strip()
            )
        for i, service in enumerate(file.service):
            if not comments.get((6, i), "").strip():
                names.append(service.name)
            names.extend(
                f"{service.name}.{method.name}"
                for j, method in enumerate(service.method)
                if not comments.get((6, i, 2, j), "").strip()
            )
        undocumented.extend(f"{file.name}: {name}" for name in names)
    assert undocumented == []


def test_enum_zero_values_are_unspecified(
    descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    for file in descriptor_set.file:
        if not file.package.startswith("langerhans."):
            continue
        enums = list(file.enum_type)
        for msg in file.message_type:
            enums.extend(msg.enum_type)
        for enum in enums:
            assert enum.value[0].number == 0
            assert enum.value[0].name.endswith("_UNSPECIFIED"), enum.name
