"""README.md's list of implemented parameters is the registry's, not hand-written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_readme_block_is_what_the_registry_says() -> None:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    gen_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_docs)
    text = (ROOT / "README.md").read_text()
    assert gen_docs.update(text) == text, "README.md's parameter list is stale: run make docs"
    assert "`always_bcc`" not in gen_docs.render()  # not yet: not listed as implemented
    assert "`message_size_limit`" in gen_docs.render()
