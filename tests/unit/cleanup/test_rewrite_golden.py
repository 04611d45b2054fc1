"""Address rewriting contexts and local-part quoting against Postfix's golden files
(rewrite_clnt.in/.ref and quote_822_local.in/.ref from Postfix 3.7.11's src/global)."""

from __future__ import annotations

from pathlib import Path

import pytest

from postbus.config.loader import Config
from postbus.rewrite import RewriteRules
from postbus.tok822 import quote_822_local, unquote_822_local

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"

# rewrite_clnt_test runs with append_dot_mydomain = yes and a remote_header_rewrite_domain;
# its .ref names them MYDOMAIN and INVALID_DOMAIN
CFG = Config.from_text(
    "compatibility_level = 3.6\nmyorigin = MYORIGIN\nmydomain = MYDOMAIN\n"
    "append_dot_mydomain = yes\nremote_header_rewrite_domain = INVALID_DOMAIN\n", "")


def test_rewrite_clnt_golden() -> None:
    remote = RewriteRules.remote(CFG)
    assert remote is not None
    rules = {"local": RewriteRules.local(CFG), "remote": remote}
    out = []
    for line in (GOLDEN / "rewrite_clnt.in").read_text().splitlines():
        rule, address = line.split(" ", 1)
        out.append(f"rule       {rule}\naddress    {address}\n"
                   f"result     {rules[rule].external(address)}\n\n")
    assert "".join(out) == (GOLDEN / "rewrite_clnt.ref").read_text()


def test_quote_822_local_golden() -> None:
    out = []
    for line in (GOLDEN / "quote_822_local.in").read_text().splitlines():
        words = line.split()
        if words[0] == "quote_with_flags":
            continue  # bare_localpart quoting: no caller in Postbus
        if words[0] == "quote":
            given = "" if words[1] == "<>" else words[1]
            out.append(f"'{given}' quoted '{quote_822_local(given)}'")
        else:
            out.append(f"'{words[1]}' unquoted '{unquote_822_local(words[1])}'")
    ref = [r for r in (GOLDEN / "quote_822_local.ref").read_text().splitlines()
           if "flags=" not in r]
    assert out == ref


def test_no_remote_context_without_a_domain() -> None:
    assert RewriteRules.remote(Config.from_text("compatibility_level = 3.6\n", "")) is None


@pytest.mark.parametrize(("given", "local"), [
    ("user", "user@MYORIGIN.MYDOMAIN"),  # append_dot_mydomain applies to $myorigin too
    ("", ""),
    ("user@host", "user@host.MYDOMAIN"),
    ("a b", "a b@MYORIGIN.MYDOMAIN"),
    ("a b@x.y", "a b@x.y"),
    ("host!user", "user@host.MYDOMAIN"),
    ("user%host.dom", "user@host.dom"),
    ("@a,@b:user@c.d", "user@c.d"),
    ("user@c.d.", "user@c.d"),
])
def test_internal_form(given: str, local: str) -> None:
    """cleanup_rewrite_internal(): quote, rewrite in the local context, unquote."""
    assert RewriteRules.local(CFG).internal(given) == local
