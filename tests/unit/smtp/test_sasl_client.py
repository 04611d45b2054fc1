"""The SMTP client's SASL mechanisms (postbus.sasl.client): RFC examples, Cyrus's choice."""

from __future__ import annotations

import pytest

from postbus.sasl.client import ClientExchange, NoMechanism, SaslClientError, choose, start

DEFAULT = frozenset({"noplaintext", "noanonymous"})  # smtp_sasl_security_options' default


def test_cram_md5_rfc2195_example() -> None:
    exchange = ClientExchange("CRAM-MD5", "tim", "tanstaaftanstaaf")
    assert exchange.initial is None
    answer = exchange.step(b"<1896.697170952@postoffice.reston.mci.net>")
    assert answer == b"tim b913a602c7eda7a495b4e6e7334d3890"
    with pytest.raises(SaslClientError):
        exchange.step(b"again")


def test_plain_sends_the_initial_response_rfc4616() -> None:
    exchange = ClientExchange("PLAIN", "tim", "tanstaaftanstaaf")
    assert exchange.initial == b"\0tim\0tanstaaftanstaaf"
    assert exchange.step(b"") == b"\0tim\0tanstaaftanstaaf"  # an empty challenge: the same
    with pytest.raises(SaslClientError):
        exchange.step(b"")


def test_login_answers_user_then_password() -> None:
    exchange = ClientExchange("LOGIN", "tim", "pw")
    assert exchange.initial is None
    assert exchange.step(b"Username:") == b"tim"
    assert exchange.step(b"Password:") == b"pw"
    with pytest.raises(SaslClientError):
        exchange.step(b"more?")


@pytest.mark.parametrize(
    ("offered", "options", "chosen"),
    [
        (["PLAIN", "LOGIN"], DEFAULT, None),  # noplaintext: no password in the clear
        (["PLAIN", "LOGIN", "CRAM-MD5"], DEFAULT, "CRAM-MD5"),
        (["LOGIN", "PLAIN"], frozenset({"noanonymous"}), "PLAIN"),
        (["login"], frozenset({"noanonymous"}), "LOGIN"),
        (["PLAIN", "CRAM-MD5"], frozenset(), "CRAM-MD5"),
        (["CRAM-MD5", "PLAIN"], frozenset({"nodictionary"}), None),
        (["CRAM-MD5"], frozenset({"noactive"}), None),
        (["PLAIN"], frozenset({"mutual_auth"}), None),
        (["GSSAPI", "XOAUTH2"], frozenset(), None),
    ],
)
def test_choose_keeps_what_the_options_allow(
    offered: list[str], options: frozenset[str], chosen: str | None
) -> None:
    assert choose(offered, options) == chosen


def test_start_without_a_usable_mechanism_says_as_cyrus() -> None:
    with pytest.raises(NoMechanism, match=r"^no mechanism available$"):
        start(["PLAIN"], DEFAULT, "u", "p")
    assert start(["PLAIN"], frozenset(), "u", "p").mechanism == "PLAIN"
