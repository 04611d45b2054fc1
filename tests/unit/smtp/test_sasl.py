"""postbus.sasl without a server: the mechanism filter of the security options, the
built-in backend's decoding, the Dovecot client's base64 check, AUTH= on MAIL FROM and
the Received comment of an authenticated sender."""

from __future__ import annotations

import pytest

from ingress_smtpd.cleanup import comment_sanitize
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.sasl import Mechanism, filter_mechanisms, open_backend, security_options
from postbus.sasl.builtin import BuiltinBackend, BuiltinExchange, Status
from postbus.sasl.dovecot import DovecotBackend, is_valid_base64
from postbus.smtp import replies as r
from postbus.smtp.address import ReplyError, parse_mail

MECHS = [Mechanism("PLAIN", frozenset({"plaintext"})), Mechanism("LOGIN", frozenset({"plaintext"})),
         Mechanism("ANONYMOUS", frozenset({"anonymous"})), Mechanism("CRAM-MD5", frozenset(
             {"dictionary", "active"})), Mechanism("SCRAM-SHA-256", frozenset(
                 {"mutual-auth", "dictionary"})), Mechanism("HIDDEN", frozenset({"private"}))]


def cfg(**main: str) -> Config:
    return Config.from_text("".join(f"{k} = {v}\n" for k, v in main.items()), "")


@pytest.mark.parametrize(("options", "kept"), [
    ("noanonymous", ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]),
    ("", ["PLAIN", "LOGIN", "ANONYMOUS", "CRAM-MD5", "SCRAM-SHA-256"]),
    ("noanonymous, noplaintext", ["CRAM-MD5", "SCRAM-SHA-256"]),
    ("noplaintext noanonymous nodictionary", []),
    ("mutual_auth", ["SCRAM-SHA-256"]),
    ("NoActive, noanonymous", ["PLAIN", "LOGIN", "SCRAM-SHA-256"]),
])
def test_security_options_filter_as_postfix_dovecot_filter(options: str, kept: list[str]) -> None:
    words = security_options(cfg(smtpd_sasl_security_options=options),
                             "smtpd_sasl_security_options")
    assert filter_mechanisms(MECHS, words) == kept


def test_tls_options_default_to_the_plain_ones_and_bad_words_are_fatal() -> None:
    c = cfg(smtpd_sasl_security_options="noplaintext")
    assert security_options(c, "smtpd_sasl_tls_security_options") == {"noplaintext"}
    with pytest.raises(ConfigError, match='unknown smtpd_sasl_security_options value "x"'):
        security_options(cfg(smtpd_sasl_security_options="noanonymous x"),
                         "smtpd_sasl_security_options")


def test_backend_by_type_and_paths() -> None:
    with pytest.raises(ConfigError, match="SASL type cyrus is not supported"):
        open_backend(cfg())
    relative = open_backend(cfg(smtpd_sasl_type="dovecot", smtpd_sasl_path="private/auth",
                                queue_directory="/var/spool/postfix"))
    assert isinstance(relative, DovecotBackend)
    assert relative.path == "/var/spool/postfix/private/auth"
    for path in ("inet:127.0.0.1:12345", "unix:/run/dovecot/auth-client", "/run/auth"):
        backend = open_backend(cfg(smtpd_sasl_type="dovecot", smtpd_sasl_path=path))
        assert isinstance(backend, DovecotBackend) and backend.path == path
    builtin = open_backend(cfg(smtpd_sasl_type="postbus", smtpd_sasl_local_domain="ex.org"))
    assert isinstance(builtin, BuiltinBackend) and builtin.realm == "ex.org"
    assert builtin.key == "postbus:sasl:users"


def test_postfix_base64_alphabet_check() -> None:
    assert is_valid_base64("AGFsaWNlAHMzY3JldA==")
    assert is_valid_base64("abc")  # Dovecot judges the length
    assert not is_valid_base64("a b")
    assert not is_valid_base64("abc\tresp=x")  # no way into the Dovecot protocol line


async def test_builtin_exchange_without_the_store() -> None:
    """The steps that never reach Redis: challenges, bad base64, malformed PLAIN."""
    backend = BuiltinBackend("k", "")
    ex = BuiltinExchange(backend)
    assert (await ex.first("plain", None)).text == ""
    assert (await ex.next("=")).text == "Invalid base64 data in continued response"
    ex = BuiltinExchange(backend)
    step = await ex.first("LOGIN", None)
    assert (step.status, step.text) == (Status.MORE, "VXNlcm5hbWU6")
    step = await ex.next("YWxpY2U=")
    assert (step.status, step.text) == (Status.MORE, "UGFzc3dvcmQ6")
    ex = BuiltinExchange(backend)
    step = await ex.first("PLAIN", "=")  # empty initial response: no NULs
    assert (step.status, step.text, step.username) == (Status.FAIL, "", None)
    step = await BuiltinExchange(backend).first("PLAIN", "A" * 10000)
    assert step.text == "Invalid base64 data in initial response"
    step = await BuiltinExchange(backend).first("DIGEST-MD5", None)
    assert (step.status, step.text) == (Status.FAIL, "Invalid authentication mechanism")


def test_auth_parameter_of_mail_from() -> None:
    assert parse_mail("FROM:<a@b.example> AUTH=<a@b.example>").auth == "<a@b.example>"
    assert parse_mail("FROM:<a@b.example> AUTH=<>").auth is None
    assert parse_mail("FROM:<a@b.example> AUTH=<> AUTH=x+2By").auth == "x+2By"
    with pytest.raises(ReplyError) as info:
        parse_mail("FROM:<a@b.example> AUTH=x AUTH=<>")
    assert info.value.reply == r.MULTIPLE_AUTH


@pytest.mark.parametrize(("name", "comment"), [
    ("alice", "alice"),
    ("a(b)c", "a(b)c"),
    ("a)b", "a?b"),
    ("a(b", "a(b)"),
    ("a\\b", "a?b"),
    ("a\x01b", "a?b"),
    ("jürgen", "j??rgen"),
])
def test_authenticated_sender_comment(name: str, comment: str) -> None:
    assert comment_sanitize(name) == comment
