"""docs/contracts.md's topic table agrees with the declared topics and the generated code."""

from __future__ import annotations

import re

from google.protobuf import symbol_database

from services.runtime.topics import TOPICS
from tests.contracts.conftest import REPO_ROOT, proto_paths

ROW = re.compile(r"^\| (?P<topic>[a-z_.0-9]+) \| `(?P<type>langerhans\.[\w.]+)` \|", re.MULTILINE)


def _topic_table() -> dict[str, str]:
    text = (REPO_ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    return {m["topic"]: m["type"] for m in ROW.finditer(text)}


def test_every_declared_topic_has_exactly_one_documented_message_type() -> None:
    table = _topic_table()
    assert sorted(table) == sorted(spec.name for spec in TOPICS)


def test_documented_message_types_exist() -> None:
    import importlib

    for rel in proto_paths():
        importlib.import_module(".".join(rel.with_suffix("").parts) + "_pb2")
    db = symbol_database.Default()
    for topic, full_name in _topic_table().items():
        message_class = db.GetSymbol(full_name)
        assert message_class.DESCRIPTOR.full_name == full_name, topic
