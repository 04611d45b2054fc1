"""local(8) templates (forward_path, command_execution_directory) and command output quoting."""

from __future__ import annotations

import pytest

from delivery_local.alias import Target, parse
from delivery_local.command import command_output, exported
from delivery_local.local_expand import ExpandError, local_expand, recipient_attrs

FILTER = "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ATTRS: dict[str, str | None] = {
    "user": "bob", "home": "/home/bob", "extension": None, "recipient_delimiter": "+",
    "local": "bob", "domain": "x.test",
}


def test_postfix_default_forward_path() -> None:
    first, second = "$home/.forward${recipient_delimiter}${extension}", "$home/.forward"
    plain = local_expand(first, ATTRS, FILTER)
    assert plain.undefined  # no extension: Postfix skips this entry
    assert local_expand(second, ATTRS, FILTER).text == "/home/bob/.forward"
    ext = local_expand(first, {**ATTRS, "extension": "lists"}, FILTER)
    assert (ext.text, ext.undefined, ext.extension_used) == (
        "/home/bob/.forward+lists", False, True)


def test_conditionals_and_the_filter() -> None:
    attrs = {**ATTRS, "extension": "..;rm -rf $HOME"}
    assert local_expand("$home/${extension?x}${user:none}", attrs, FILTER).text == "/home/bob/x"
    assert local_expand("${extension:none}/$(user)", ATTRS, FILTER).text == "none/bob"
    # an extension brings no shell syntax (and one with "/" is dropped: recipient_attrs)
    assert local_expand("/var/fwd/$extension", attrs, FILTER).text == "/var/fwd/.._rm_-rf__HOME"
    assert local_expand("$$home", ATTRS, FILTER).text == "$home"
    for bad in ("${home", "$home/${}", "${ho me}"):
        with pytest.raises(ExpandError):
            local_expand(bad, ATTRS, FILTER)


def test_command_output_as_postfix_quotes_it() -> None:
    assert command_output(b"no such\tuser\nbye\n") == "no such user bye "
    assert command_output(b"bell\x07here") == "bell_here"
    assert len(command_output(b"x" * 10000)) == 4096


def test_export_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("LANG", raising=False)
    assert exported(["TZ", "LANG", "MAIL_CONFIG=/etc/postbus"]) == {
        "TZ": "UTC", "MAIL_CONFIG": "/etc/postbus"}


def test_forward_entries() -> None:
    assert parse('\\bob, ~/mail/inbox, "|procmail -a x"') == [
        Target("local", "\\bob"), Target("home", "~/mail/inbox"),
        Target("command", "procmail -a x"),
    ]


def test_recipient_attrs() -> None:
    attrs = recipient_attrs("Bob+Lists@X.test", "+", "/home/bob")
    assert (attrs["user"], attrs["local"], attrs["extension"], attrs["domain"]) == (
        "bob", "bob+lists", "lists", "x.test")
    bad = recipient_attrs("bob+../../etc@x.test", "+")
    assert (bad["local"], bad["extension"], bad["recipient_delimiter"]) == ("bob", None, "+")
