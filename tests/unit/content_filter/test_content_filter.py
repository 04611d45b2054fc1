"""content-filter's parts on their own: table keys, signing and verifying with dkimpy,
the scanner's verdicts, the Authentication-Results header, and key generation."""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest

from content_filter import agent
from content_filter.authres import Results, aligned, sig_tags, strip_own_results
from content_filter.dkim_sign import (
    Signer,
    SignError,
    author,
    canonicalization,
    lookup_keys,
    parse_key_entry,
)
from content_filter.scanner import Scanner, default_action
from postbus.cli import dkim as keytool
from postbus.config.conv import ConfigError
from postbus.config.loader import Config

MESSAGE = (b"From: Alice <alice@Mail.Example.test>\r\nTo: bob@remote.test\r\n"
           b"Subject: hello\r\n\tfolded\r\nDate: Mon, 30 Nov 2026 08:00:00 +0000\r\n\r\n"
           b"body\r\n")


def test_lookup_keys_go_from_address_to_domain_to_parents() -> None:
    assert lookup_keys("Alice@Mail.Example.test") == [
        ("alice@mail.example.test", False), ("mail.example.test", True),
        (".example.test", True), (".test", True)]
    assert lookup_keys("") == []
    assert lookup_keys("example.test") == [("example.test", False), (".test", True)]


def test_key_entries_and_canonicalization() -> None:
    key = parse_key_entry("Example.test:sel:/etc/keys/a:b.pem")
    assert (key.domain, key.selector, key.keyfile) == ("example.test", "sel", "/etc/keys/a:b.pem")
    with pytest.raises(SignError, match="want domain:selector:keyfile"):
        parse_key_entry("example.test:sel")
    assert canonicalization(Config.from_text("postbus_dkim_canonicalization = relaxed\n")) == (
        b"relaxed", b"simple")
    with pytest.raises(ConfigError, match="not a DKIM canonicalization"):
        canonicalization(Config.from_text("postbus_dkim_canonicalization = loose/simple\n"))
    with pytest.raises(ConfigError, match="From header field must be signed"):
        Signer(Config.from_text("postbus_dkim_signed_headers = subject\n"))


def test_author_is_the_from_header_else_the_sender() -> None:
    assert author(MESSAGE.split(b"\r\n\r\n")[0], "x@y.test") == "alice@Mail.Example.test"
    assert author(b"Subject: none", "x@y.test") == "x@y.test"


async def test_sign_with_key_table_verifies(tmp_path: Path) -> None:
    private, record = keytool.keygen("example.test", "s1", 1024, tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600
    value = "".join(re.findall(r'"([^"]*)"', record)).encode()
    (tmp_path / "signing").write_text(".example.test example-key\n")
    (tmp_path / "keys").write_text(f"example-key example.test:s1:{private}\n")
    cfg = Config.from_text(f"postbus_dkim_signing_table = texthash:{tmp_path}/signing\n"
                           f"postbus_dkim_key_table = texthash:{tmp_path}/keys\n")
    key, signature = await Signer(cfg).sign(MESSAGE, "bounce@other.test")
    assert key is not None and key.selector == "s1"
    tags = sig_tags(signature.split(b":", 1)[1])
    assert tags[b"d"] == b"example.test" and tags[b"c"] == b"relaxed/simple"
    assert tags[b"h"] == b"from:subject:date:to"  # postbus_dkim_signed_headers order
    assert dkim.verify(signature + MESSAGE, dnsfunc=lambda name, timeout=5: value)
    assert not dkim.verify(signature + MESSAGE.replace(b"body", b"bodY"),
                           dnsfunc=lambda name, timeout=5: value)
    # an author outside the table: not signed; a missing key file: a SignError
    assert await Signer(cfg).sign(MESSAGE.replace(b"Example.test", b"x.org"), "") == (None, b"")
    no_from = MESSAGE.replace(b"From: Alice <alice@Mail.Example.test>\r\n", b"")
    assert await Signer(cfg).sign(no_from, "alice@example.test") == (None, b"")
    private.unlink()
    with pytest.raises(SignError, match=r"cannot read DKIM key .*s1\.private"):
        await Signer(cfg).sign(MESSAGE, "")
    (tmp_path / "keys").write_text("other x:y:z\n")
    with pytest.raises(SignError, match="'example-key' is not in postbus_dkim_key_table"):
        await Signer(cfg).sign(MESSAGE, "")


def test_keygen_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keytool.main(["keygen", "-d", "example.test", "-s", "k", "-b", "1024",
                         "-D", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith('k._domainkey\tIN\tTXT\t( "v=DKIM1; h=sha256; k=rsa; p=')
    assert out.out == (tmp_path / "k.txt").read_text()
    assert f"example.test:k:{tmp_path}/k.private" in out.err
    assert keytool.main(["keygen", "-d", "example.test", "-s", "k", "-D", str(tmp_path)]) == 1
    assert "k.private exists; not overwritten" in capsys.readouterr().err
    assert keytool.main(["keygen", "-d", "example.test", "-b", "512"]) == 1


def test_scanner_verdicts_and_thresholds() -> None:
    scanner = Scanner(Config.from_text(
        "postbus_content_filter_scanner_url = http://127.0.0.1:1/checkv2\n"
        "postbus_content_filter_reject_score = 15\n"
        "postbus_content_filter_add_header_score = 5\n"))
    assert scanner._verdict({"action": "no action", "score": 1}).action == "accept"
    assert scanner._verdict({"action": "no action", "score": 6}).action == "add_header"
    assert scanner._verdict({"action": "add header", "score": 16}).action == "reject"
    assert scanner._verdict({"action": "soft reject", "score": 1}).action == "tempfail"
    assert scanner._verdict({"action": "Rewrite Subject", "score": 1,
                             "subject": "[SPAM] x"}).subject == "[SPAM] x"
    with pytest.raises(ValueError, match="unknown scanner action 'quarantine'"):
        scanner._verdict({"action": "quarantine"})
    with pytest.raises(ValueError, match="bad scanner score"):
        scanner._verdict({"action": "reject", "score": "high"})
    with pytest.raises(ConfigError, match="not one of accept, tempfail, reject, hold"):
        default_action(Config.from_text("postbus_content_filter_default_action = drop\n"))
    with pytest.raises(ConfigError, match="'lots' is not a number"):
        Scanner(Config.from_text("postbus_content_filter_reject_score = lots\n"))


def test_authentication_results_header() -> None:
    results = Results([("dkim", "pass", "header.d=a.test header.s=s header.b=abcdefgh"),
                       ("spf", "fail", "smtp.mailfrom=x@a.test")])
    assert results.header("mx.test") == (
        b"Authentication-Results: mx.test;\r\n\tdkim=pass header.d=a.test header.s=s "
        b"header.b=abcdefgh;\r\n\tspf=fail smtp.mailfrom=x@a.test\r\n")
    assert Results().header("mx.test") == b"Authentication-Results: mx.test; none\r\n"
    headers = [(b"Authentication-Results", b" MX.test; dkim=pass"),
               (b"Authentication-Results", b" other.test; dkim=pass"),
               (b"Authentication-Results", b" mx.test.evil; spf=pass")]
    assert strip_own_results(headers, "mx.test") == [0]
    assert aligned("mail.example.test", "example.test")
    assert not aligned("example.test", "example.org")


def test_subject_rewrite_and_header_split() -> None:
    fields, body = agent.split(agent.crlf(MESSAGE.replace(b"\r\n", b"\n")))
    assert fields[2] == b"Subject: hello\r\n\tfolded\r\n" and body == b"\r\nbody\r\n"
    rewritten = agent.rewrite_subject(list(fields), "")[2]
    assert rewritten == b"Subject: ***SPAM*** hello\r\n\tfolded\r\n"
    assert agent.rewrite_subject([b"To: x\r\n"], "[SPAM]") == [b"To: x\r\n",
                                                               b"Subject: [SPAM]\r\n"]


def test_openssl_rsa_step_makes_dkimpys_own_signature(tmp_path: Path) -> None:
    import hashlib

    import dkim.crypto

    from content_filter import rsa_fast

    private, _ = keytool.keygen("example.test", "r", 1024, tmp_path)
    pk = dkim.crypto.parse_pem_private_key(private.read_bytes())
    for name in ("sha256", "sha1"):
        digest = hashlib.new(name, b"header hash input")
        assert rsa_fast.sign(digest, pk) == dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, pk)
    assert dkim.RSASSA_PKCS1_v1_5_sign is rsa_fast.sign  # installed by dkim_sign
