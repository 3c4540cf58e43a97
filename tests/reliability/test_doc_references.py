"""Every test named in the threat model and the reliability page exists (a rename must not
leave a mitigation without its proof)."""

from __future__ import annotations

import re

import pytest

from services.runtime.settings import REPO_ROOT

REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`((?:, `::\w+`)*)")


@pytest.mark.parametrize("doc", ["docs/security.md", "docs/reliability.md"])
def test_named_tests_exist(doc: str) -> None:
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert len(references) >= 8
    missing = []
    for path, first, more in references:
        source = (
            (REPO_ROOT / path).read_text(encoding="utf-8") if (REPO_ROOT / path).exists() else ""
        )
        for name in [first, *re.findall(r"`::(\w+)`", more)]:
            if not re.search(rf"^(async )?def {name}\(", source, re.MULTILINE):
                missing.append(f"{path}::{name}")
    assert missing == []
