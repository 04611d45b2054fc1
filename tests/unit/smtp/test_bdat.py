"""BDAT's arithmetic and parsing (ingress_smtpd.bdat), checked against what Postfix 3.7
answered in tests/data/postfix/smtpd_dialogues.json and against its bdat_cmd()."""

from __future__ import annotations

import pytest

from ingress_smtpd.bdat import Chunks, parse_bdat
from ingress_smtpd.etrn import etrn_site
from postbus.smtp import replies as r
from postbus.smtp.address import ReplyError, parse_mail, parse_rcpt
from postbus.smtp.xtext import uxtext_decode


@pytest.mark.parametrize(("arg", "parsed"), [
    ("10", (10, False)), ("0 LAST", (0, True)), ("5 last", (5, True)), ("007", (7, False)),
    ("", None), ("10 NOTLAST", None), ("-1", None), ("+1", None), ("1x", None),
    ("1 LAST x", None), ("99999999999999999999", None), ("\u0663", None),
    (str(2**63 - 1), (2**63 - 1, False)), (str(2**63), None),
])
def test_bdat_arguments(arg: str, parsed: tuple[int, bool] | None) -> None:
    assert parse_bdat(arg) == parsed


def test_sizes_are_counted_as_postfix_counts_them() -> None:
    chunks = Chunks(size_limit=0, line_limit=2048)
    chunks.add(b"Subject: x\r\n\r\nab\r\nc")  # 3 lines and a partial one
    assert chunks.act_size == 12 + 2 + 4
    assert chunks.pending_bytes() == 19  # what "lost connection after BDAT (19 bytes)" says
    chunks.add(b"d\nbare\n")  # bare LFs count as CRLF
    assert chunks.act_size == 18 + 4 + 6
    chunks.add(b"no end")
    chunks.last()
    assert chunks.act_size == 28 + 8
    assert chunks.content() == b"Subject: x\r\n\r\nab\r\ncd\r\nbare\r\nno end\r\n"
    long = Chunks(size_limit=0, line_limit=10)
    long.add(b"x" * 25 + b"\r\n" + b"y" * 20 + b"\n")  # records of 10: +2 for each more
    assert long.act_size == (25 + 2 + 2 * 2) + (20 + 2 + 2 * 2)


def test_size_limit_drops_the_content_once() -> None:
    chunks = Chunks(size_limit=100, line_limit=2048)
    chunks.add(b"x" * 8 + b"\n")
    assert not chunks.too_big
    chunks.add((b"x" * 8 + b"\n") * 10)  # 11 lines of 10 = 110 > 100
    assert chunks.too_big and chunks.raw == bytearray()
    chunks.add(b"more\n")
    assert chunks.raw == bytearray()


@pytest.mark.parametrize(("arg", "site"), [
    ("example.com", "example.com"), ("@example.com", "example.com"),
    ("#example.com", "example.com"), ("[127.0.0.1]", "[127.0.0.1]"), ("a_b.example", "a_b.example"),
    ("@", None), ("1.2.3.4", None), ("-bad-.example", None), ("a..b", None),
    ("example.com.", None), ("[300.1.1.1]", None), ("ex\u00e4mple.com", None),
])
def test_etrn_sites(arg: str, site: str | None) -> None:
    assert etrn_site(arg) == site


def test_ehlo_keywords_and_what_discarding_them_means() -> None:
    assert r.ehlo_lines("mx", 1000, starttls=True) == [
        "mx", "PIPELINING", "SIZE 1000", "VRFY", "ETRN", "STARTTLS", "ENHANCEDSTATUSCODES",
        "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
    mask = r.discard_mask("chunking, Smtputf8 bogus\tSTARTTLS,silent-discard")
    assert mask == frozenset({"CHUNKING", "SMTPUTF8", "STARTTLS", "SILENT-DISCARD"})
    assert r.discard_text(mask) == "STARTTLS EHLO_MASK_SMTPUTF8 CHUNKING SILENT-DISCARD"
    assert r.ehlo_lines("mx", 0, discard=mask, starttls=True, smtputf8=True) == [
        "mx", "PIPELINING", "SIZE", "VRFY", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
    with pytest.raises(ReplyError) as info:
        parse_mail("FROM:<a@b> RET=FULL", dsn=False)
    assert info.value.reply == r.DSN_DISABLED
    with pytest.raises(ReplyError) as info:
        parse_mail("FROM:<a@b> SMTPUTF8", smtputf8=False)
    assert info.value.reply == "555 5.5.4 Unsupported option: SMTPUTF8"
    with pytest.raises(ReplyError) as info:
        parse_rcpt("TO:<a@b> NOTIFY=NEVER", dsn=False)
    assert info.value.reply == r.DSN_DISABLED


def test_utf8_orcpt() -> None:
    assert uxtext_decode("k\\x{E4}se@example") == "k\u00e4se@example"
    assert uxtext_decode("\u00e9t\u00e9@x") == "\u00e9t\u00e9@x"
    assert uxtext_decode("a\\x{110000}") is None
    assert uxtext_decode("a\\x{D800}") is None
    assert uxtext_decode("a\\x{zz}") is None
    assert uxtext_decode("a\\x{41") is None
    assert parse_rcpt("TO:<b@c> ORCPT=utf-8;\u043a@x\\x{2E}y").orcpt == "\u043a@x.y"
