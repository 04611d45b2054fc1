"""Table results as addresses (≈ mail_addr_crunch.c, mail_addr_map.c): Postfix's
mail_addr_crunch golden file, and the mapping rules of canonical(5)/virtual(5):
``@otherdomain`` results, extension propagation, results without an address."""

from __future__ import annotations

from pathlib import Path

import pytest

from postbus.cleanup.addr_map import addr_map, crunch
from postbus.config.loader import Config
from postbus.maps.maps import open_maps
from postbus.maps.table import TableRetry
from postbus.resolve import Resolver
from postbus.rewrite import RewriteRules
from postbus.tok822 import quote_822_local

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
CFG = Config.from_text(
    "compatibility_level = 3.6\nmyhostname = mx.postbus.test\nmydomain = postbus.test\n"
    "myorigin = postbus.test\nmydestination = $myhostname, postbus.test\n"
    "recipient_delimiter = +\n", "")
RULES = RewriteRules.local(CFG)


def test_mail_addr_crunch_golden() -> None:
    """mail_addr_crunch.in is a shell script of here-documents: form in, form out,
    extension, then one address list per line."""
    script = (GOLDEN / "mail_addr_crunch.in").read_text()
    out: list[str] = []
    for block in script.split("echo ")[1:]:
        title, _, rest = block.partition("\n")
        out.append(title.strip().strip("'\"") + "\n")
        lines = rest.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0].split("\n")
        form_in, form_out, extension = lines[:3]
        for text in lines[3:]:
            if form_in == "internal":
                text = quote_822_local(text)
            for address in crunch(text, extension or None, RULES, form_out == "external"):
                out.append(f"|{address}|\n")
    assert "".join(out) == (GOLDEN / "mail_addr_crunch.ref").read_text()


@pytest.mark.parametrize(("table", "address", "propagate", "result"), [
    # @otherdomain keeps the user (and the full local part when no extension was split)
    ("{@old.example=@new.example}", "joe@old.example", True, ["joe@new.example"]),
    ("{@old.example=@new.example}", "joe+x@old.example", True, ["joe+x@new.example"]),
    # an extension stripped to find the entry goes back on each result when propagated
    ("{{joe@postbus.test=a@example.net, b}}", "joe+x@postbus.test", True,
     ["a+x@example.net", "b+x@postbus.test"]),
    ("{{joe@postbus.test=a@example.net, b}}", "joe+x@postbus.test", False,
     ["a@example.net", "b@postbus.test"]),
    # bare names match in local domains only; results are canonicalized
    ("{joe=Joe.User}", "joe@mx.postbus.test", True, ["Joe.User@postbus.test"]),
    ("{joe=Joe.User}", "joe@example.com", True, None),
    # quoted local parts are looked up and returned quoted (external form)
    ('{{"a b"@postbus.test="c d"@example.net}}', "a b@postbus.test", True, ["c d@example.net"]),
    # the null address
    ("{x@postbus.test=<>}", "x@postbus.test", True, [""]),
])
async def test_addr_map(table: str, address: str, propagate: bool,
                        result: list[str] | None) -> None:
    maps = open_maps(f"inline:{table}", "virtual_alias_maps")
    got = await addr_map(Resolver(CFG), maps, address, propagate=propagate, rules=RULES)
    assert got == result


async def test_a_result_without_an_address_is_a_table_error() -> None:
    maps = open_maps("inline:{{x@postbus.test=(just a comment)}}", "virtual_alias_maps")
    with pytest.raises(TableRetry):
        await addr_map(Resolver(CFG), maps, "x@postbus.test", propagate=True, rules=RULES)
