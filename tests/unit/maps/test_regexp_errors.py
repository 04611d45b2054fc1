"""A regexp: table with broken lines: each is skipped with the warning Postfix logs
(glibc's regerror() text, as Debian's Postfix 3.7 writes it with ``postmap -q``),
the others work; and what glibc accepts that Python's ``re`` would refuse or read
otherwise (a lone ``)``, ``a**``, ``a{,3}``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from postbus.maps.maps import open_maps

#: (rule, Postfix's warning after "regexp map FILE, line N: ")
BROKEN = [
    ("/a(b/", "Unmatched ( or \\("),
    ("/a[b/", "Unmatched [, [^, [:, [., or [="),
    ("/*a/", "Invalid preceding regular expression"),
    ("/[z-a]/", "Invalid range end"),
    ("/[[:foo:]]/", "Invalid character class name"),
    ("/a{1/", "Unmatched \\{"),
    ("/a{2,1}/", "Invalid content of \\{\\}"),
    ("/(a)\\2/", "Invalid back reference"),
    ("/a{x}/", "Invalid content of \\{\\}"),
    ("/+a/", "Invalid preceding regular expression"),
    ("/a|*b/", "Invalid preceding regular expression"),
    ("/{/", "Invalid preceding regular expression"),
    ("/a{}/", "Invalid content of \\{\\}"),
]


def lookup(path: Path, key: str) -> str | None:
    return asyncio.run(open_maps(f"regexp:{path}").find(key))


def test_broken_lines_are_skipped_with_postfixs_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = tmp_path / "broken"
    table.write_text("".join(f"{rule} BROKEN\n" for rule, _ in BROKEN) + "/^ok$/ FOUND\n")
    caplog.set_level(logging.WARNING)
    assert lookup(table, "ok") == "FOUND"
    assert [r.getMessage() for r in caplog.records] == [
        f"regexp map {table}, line {n}: {text}" for n, (_, text) in enumerate(BROKEN, 1)]


@pytest.mark.parametrize(("rule", "key", "found"), [
    ("/a)/", "a)", True),  # glibc: a lone ")" is a literal
    ("/a)/", "a", False),
    ("/^a**$/", "aaa", True),  # (a*)*
    ("/^a*+$/", "aaa", True),  # (a*)+, not Python's possessive
    ("/^a{,2}$/", "aa", True),  # {0,2}
    ("/^a{,2}$/", "aaa", False),
    ("/^a{1,2}{3}$/", "aaaaaa", True),
    ("/^(ab|cd)+$/", "abcdab", True),
])
def test_what_glibc_accepts(tmp_path: Path, rule: str, key: str, found: bool) -> None:
    table = tmp_path / "t"
    table.write_text(f"{rule} HIT\n")
    assert (lookup(table, key) == "HIT") is found
