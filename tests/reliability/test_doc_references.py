"""Every test named in the threat model and the reliability page exists (a rename must not
leave a mitigation without its proof). Bare `test_x.py::…` names are in tests/reliability/."""

from __future__ import annotations

import re

import pytest

from services.runtime.settings import REPO_ROOT

REFERENCE = re.compile(r"`((?:tests/[\w/]+/)?test_\w+\.py)::(\w+)`((?:, `::\w+`)*)")


@pytest.mark.parametrize(
    ("doc", "at_least"), [("docs/security.md", 15), ("docs/reliability.md", 6)]
)
def test_named_tests_exist(doc: str, at_least: int) -> None:
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert len(references) >= at_least
    missing = []
    for path, first, more in references:
        file = REPO_ROOT / (path if path.startswith("tests/") else f"tests/reliability/{path}")
        source = file.read_text(encoding="utf-8") if file.exists() else ""
        for name in [first, *re.findall(r"`::(\w+)`", more)]:
            if not re.search(rf"^(async )?def {name}\(", source, re.MULTILINE):
                missing.append(f"{path}::{name}")
    assert missing == []
