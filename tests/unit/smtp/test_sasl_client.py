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


@pytest.mark.parametrize(
    ("mechanism", "nonce", "server_first", "client_final", "server_final"),
    [
        ("SCRAM-SHA-1", "fyko+d2lbbFgONRv9qkxdawL",  # RFC 5802 section 5
         "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
         "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
         "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
        ("SCRAM-SHA-256", "rOprNGfwEbeRWgbNEkqO",  # RFC 7677 section 3
         "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
         "i=4096",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
    ],
)
def test_scram_rfc_examples(mechanism: str, nonce: str, server_first: str, client_final: str,
                            server_final: str) -> None:
    exchange = ClientExchange(mechanism, "user", "pencil", nonce=nonce)
    assert exchange.initial == f"n,,n=user,r={nonce}".encode()
    assert exchange.step(server_first.encode()) == client_final.encode()
    assert exchange.step(server_final.encode()) == b""


def test_scram_refuses_a_server_that_cannot_prove_itself() -> None:
    exchange = ClientExchange("SCRAM-SHA-1", "user", "pencil", nonce="abc")
    with pytest.raises(SaslClientError, match="protocol error"):
        exchange.step(b"r=other,s=QSXCR+Q6sek8bf92,i=4096")  # not our nonce
    exchange = ClientExchange("SCRAM-SHA-1", "user", "pencil", nonce="abc")
    exchange.step(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=16")
    with pytest.raises(SaslClientError, match="server signature"):
        exchange.step(b"v=AAAA")
    exchange = ClientExchange("SCRAM-SHA-1", "u,=", "p", nonce="abc")
    assert exchange.initial == b"n,,n=u=2C=3D,r=abc"
    with pytest.raises(SaslClientError, match="authentication failure: invalid-proof"):
        exchange.step(b"e=invalid-proof")


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
        (["LOGIN", "PLAIN"], frozenset({"noanonymous"}), "LOGIN"),  # the server's order
        (["PLAIN", "LOGIN"], frozenset({"noanonymous"}), "PLAIN"),
        (["login"], frozenset({"noanonymous"}), "LOGIN"),
        (["PLAIN", "CRAM-MD5"], frozenset(), "CRAM-MD5"),
        (["CRAM-MD5", "SCRAM-SHA-1"], DEFAULT, "SCRAM-SHA-1"),
        (["SCRAM-SHA-1", "SCRAM-SHA-256"], DEFAULT, "SCRAM-SHA-1"),  # no flag more: the first
        (["CRAM-MD5", "PLAIN"], frozenset({"nodictionary"}), None),
        (["CRAM-MD5", "SCRAM-SHA-256"], frozenset({"noactive"}), "SCRAM-SHA-256"),
        (["PLAIN", "SCRAM-SHA-1"], frozenset({"mutual_auth"}), "SCRAM-SHA-1"),
        (["SCRAM-SHA-1"], frozenset({"forward_secrecy"}), None),
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
