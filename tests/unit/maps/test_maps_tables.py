"""Table types: key/value files, static, inline, fail, composites, surrogates, Maps."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import (
    SurrogateTable,
    TableConfigError,
    TableRetry,
    open_table,
    registered_types,
)
from postbus.maps.types._syntax import logical_lines


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# readlline.c's own test cases: (input, logical lines)
READLLINE_CASES = [
    (" abcde\nfghij\n", ["fghij"]),
    (" #abcde\nfghij\n", ["fghij"]),
    ("#abc\ndef", ["def"]),
    ("\nabc\n", ["abc"]),
    (" \nabc\n", ["abc"]),
    ("abc def", ["abc def"]),
    ("#abc def", []),
    ("abc\n def\n", ["abc def"]),
    ("abc\n #def\n ghi", ["abc ghi"]),
    ("abc\n#def\n ghi", ["abc ghi"]),
    ("abc\n \n ghi", ["abc ghi"]),
    ("abc\n\n ghi", ["abc ghi"]),
    ("abc\n#def\n", ["abc"]),
    ("\n", []),
    ("abc\n ", ["abc"]),
    ("a 1\n  b\nc 2\n", ["a 1  b", "c 2"]),
]


@pytest.mark.parametrize(("text", "expected"), READLLINE_CASES)
def test_logical_lines(text: str, expected: list[str]) -> None:
    assert [line for _, line in logical_lines(text, "f")] == expected


def test_logical_line_starting_with_space_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "postbus.maps"):
        assert list(logical_lines(" abc\n def\nx y\n", "f")) == [(3, "x y")]
    assert caplog.messages == ['f: logical line must not start with whitespace: " abc def"']


async def test_texthash_postfix_semantics(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "t", "Foo bar\nfoo baz\nfoo2\n  cont\nfoo3 a\n  b c\n"
                 "# comment\nkey\tval  \nnovalue\n\"a b\" quoted\nbad\"x v\n")
    table = open_table(f"texthash:{path}")
    assert table.fixed
    with caplog.at_level(logging.WARNING, "postbus.maps"):
        assert await table.lookup("FOO") == "bar"  # first wins, keys folded
    assert await table.lookup("foo2") == "cont"
    assert await table.lookup("foo3") == "a  b c"
    assert await table.lookup("key") == "val"
    assert await table.lookup('"A B"') == "quoted"
    assert await table.lookup("novalue") is None
    assert await table.lookup("missing") is None
    assert f'{path}, line 2: duplicate entry: "foo"' in caplog.messages
    assert any("line 9: expected format: key whitespace value" in m for m in caplog.messages)
    assert any("line 11: unbalanced" in m for m in caplog.messages)


async def test_texthash_reads_source(tmp_path: Path) -> None:
    # hash:, btree:, lmdb:, cdb: live in Redis: tests/integration/maps/test_maps_store.py
    path = write(tmp_path, "m", "example.com OK\n")
    assert await open_table(f"texthash:{path}").lookup("EXAMPLE.com") == "OK"


async def test_file_reloaded_when_changed(tmp_path: Path) -> None:
    path = write(tmp_path, "m", "a 1\n")
    table = open_table(f"texthash:{path}")
    assert await table.lookup("a") == "1"
    Path(path).write_text("a 22\n")
    os.utime(path, ns=(1, 1))
    assert await table.lookup("a") == "22"


async def test_missing_file_is_retry_not_notfound(tmp_path: Path) -> None:
    table = open_table(f"texthash:{tmp_path}/nope")
    with pytest.raises(TableRetry, match="open database"):
        await table.lookup("a")
    with pytest.raises(TableConfigError):
        open_table(f"texthash:{tmp_path}/nope", strict=True)


@pytest.mark.parametrize("spec", ["nosuch:x", "nocolon", ":x", "inline:{}", "inline:{a}",
                                  "unionmap:{a}", "pipemap:x", "static:{a"])
async def test_bad_spec_is_surrogate(spec: str) -> None:
    table = open_table(spec)
    assert isinstance(table, SurrogateTable)
    with pytest.raises(TableRetry):
        await table.lookup("x")
    with pytest.raises(TableConfigError):
        open_table(spec, strict=True)


STATIC_INLINE = [
    ("static:OK", "anything", "OK"),
    ("static:{ text with spaces }", "x", "text with spaces"),
    ("inline:{ key=value, { key2 = text with spaces } }", "KEY", "value"),
    ("inline:{ key=value, { key2 = text with spaces } }", "key2", "text with spaces"),
    ("inline:{ key=value, { key2 = text with spaces } }", "key3", None),
    ("inline:{a=1, A=2}", "a", "2"),  # no duplicate check: last wins
    ("unionmap:{static:a, inline:{x=b}}", "x", "a,b"),
    ("unionmap:{inline:{y=a}, inline:{x=b}}", "z", None),
    ("pipemap:{inline:{x=y}, inline:{y=z}}", "x", "z"),
    ("pipemap:{inline:{x=y}, inline:{q=z}}", "x", None),
]


@pytest.mark.parametrize(("spec", "key", "value"), STATIC_INLINE)
async def test_static_inline_composite(spec: str, key: str, value: str | None) -> None:
    assert await open_table(spec).lookup(key) == value


async def test_fail_table_and_composite_errors() -> None:
    assert not open_table("fail:x").fixed
    for spec in ("fail:x", "unionmap:{static:a, fail:x}", "pipemap:{static:a, fail:x}"):
        with pytest.raises(TableRetry):
            await open_table(spec).lookup("k")


def test_registered_types() -> None:
    assert {"static", "inline", "fail", "texthash", "hash", "regexp", "pcre", "cidr",
            "unionmap", "pipemap", "environ"} <= set(registered_types())


async def test_maps_first_table_wins_and_retry_propagates() -> None:
    maps = open_maps("inline:{a=1}, inline:{a=2 b=3}  static:S", "test_maps")
    assert len(maps) == 3
    assert await maps.find("a") == "1"
    assert await maps.find("b") == "3"
    assert await maps.find("zzz") == "S"
    assert await maps.find("") is None
    assert await Maps().find("a") is None
    with pytest.raises(TableRetry):
        await open_maps("inline:{a=1}, fail:x, static:S").find("b")
    assert await open_maps("inline:{a=1}, fail:x").find("a") == "1"


async def test_maps_partial_skips_pattern_tables() -> None:
    maps = open_maps("regexp:{ {/./ re} }, static:st")
    assert await maps.find("x") == "re"
    assert await maps.find("x", partial=True) == "st"


async def test_maps_empty_result_is_config_error() -> None:
    with pytest.raises(TableRetry):
        await open_maps("static:{}").find("x")


async def test_nis_without_a_domain_finds_nothing_after_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from postbus.maps.types.static import NisTable

    NisTable.warned = False
    table = open_table("nis:mail.aliases", strict=True)
    assert await table.lookup("root") is None
    assert await table.lookup("postmaster") is None
    warnings = [r for r in caplog.records if "NIS lookups disabled" in r.getMessage()]
    assert len(warnings) == 1
