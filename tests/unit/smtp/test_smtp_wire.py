"""The SMTP wire rules both sides share (postbus.smtp): dot-stuffing, xtext, quoting, replies."""

from __future__ import annotations

import pytest

from postbus.smtp import xtext
from postbus.smtp.address import parse_address, quote_local
from postbus.smtp.dotstuff import crlf, crlf_lines, stuff, unstuff
from postbus.smtp.reply import NotAReply, Reply, ReplyLines, ehlo_features

# -- dot-stuffing (RFC 5321 4.5.2) ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content"),
    [
        (b"", b""),
        (b"a\r\n", b"a\r\n"),
        (b"..a\r\n", b".a\r\n"),
        (b".a\r\n", b"a\r\n"),  # Postfix drops any leading dot
        (b"a\r\n..\r\n...b\r\n", b"a\r\n.\r\n..b\r\n"),
        (b"bare\nlf\r\n", b"bare\r\nlf\r\n"),
        (b"x\r\n.\n", b"x\r\n\r\n"),
        (b"mid.dot\r\n", b"mid.dot\r\n"),
        (b"cr\ronly\r\n", b"cr\ronly\r\n"),
    ],
)
def test_unstuff(raw: bytes, content: bytes) -> None:
    assert unstuff(raw) == content


def test_stuff_doubles_leading_dots_and_ends_with_the_dot_line() -> None:
    assert stuff(crlf(b"a\n.b\r\n..c\rd")) == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    assert stuff(crlf(b"")) == b".\r\n"
    assert stuff(b".\r\n") == b"..\r\n.\r\n"  # a lone dot line is not the end


@pytest.mark.parametrize(
    ("content", "lines"),
    [
        (b"", [b""]),
        (b"a", [b"a", b""]),
        (b"a\r\nb\r\n", [b"a", b"b", b""]),
        (b"a\r\nb", [b"a", b"b", b""]),
        (b"a\nb\r\n", [b"a", b"b", b""]),  # a lone LF ends a line
        (b"a\rb\r\n", [b"a", b"b", b""]),  # so does a lone CR
        (b"a\r\r\nb\n\r", [b"a", b"", b"b", b"", b""]),
        (b"\r\n\r\n", [b"", b"", b""]),
        (b"\n", [b"", b""]),
    ],
)
def test_crlf_and_its_lines(content: bytes, lines: list[bytes]) -> None:
    assert crlf_lines(content) == lines
    assert crlf(content) == b"\r\n".join(lines)


def test_crlf_keeps_content_that_needs_nothing() -> None:
    content = b"Subject: x\r\n\r\nbody\r\n" * 100
    assert crlf(content) is content  # no copy of every message


@pytest.mark.parametrize(
    "content",
    [b"", b"a\r\n", b".\r\n", b"..\r\n", b".a\r\n.\r\nb\r\n", b"x\r\n\r\n.\r\n..y\r\n"],
)
def test_stuff_and_unstuff_round_trip(content: bytes) -> None:
    wire = stuff(content)
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    assert b"\r\n.\r\n" not in wire[:-3]  # no early end of data
    assert unstuff(wire[:-3]) == content


# -- xtext (RFC 3461 4) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("a+b=c d", "a+2Bb+3Dc+20d"),
        ("<1234@example.com>", "<1234@example.com>"),
        ("rfc822;x", "rfc822;x"),
        ("k\u00e4se", "k+C3+A4se"),  # the UTF-8 octets, as Postfix's xtext_quote()
        ("tab\there", "tab+09here"),
        ("", ""),
    ],
)
def test_xtext_encode_and_decode(text: str, encoded: str) -> None:
    assert xtext.encode(text) == encoded
    assert xtext.valid(encoded)
    assert xtext.decode(encoded) == text


def test_xtext_decode_keeps_octets_that_are_not_utf8() -> None:
    assert xtext.decode("caf+E9") == "caf\u00e9"
    assert xtext.decode("+2b+2B") == "++"  # either case of hex on the way in


@pytest.mark.parametrize("bad", ["a=b", "a+2", "a+zz", "a b", "k\u00e4se"])
def test_xtext_invalid(bad: str) -> None:
    assert not xtext.valid(bad)


# -- local parts (RFC 5321 4.1.2; ≈ quote_821_local() with 8BITCLEAN) ------------------


@pytest.mark.parametrize(
    ("address", "quoted"),
    [
        ("bob@example.com", "bob@example.com"),
        ("john doe@example.com", '"john doe"@example.com'),
        ("postmaster", "postmaster"),
        ("j\u00f8rn@example.com", "j\u00f8rn@example.com"),  # SMTPUTF8: not quoted
        ('a"b@example.com', '"a\\"b"@example.com'),
        ("a..b@example.com", '"a..b"@example.com'),
        (".a@example.com", '".a"@example.com'),
        ("a.@example.com", '"a."@example.com'),
        ("first.last+tag@example.com", "first.last+tag@example.com"),
        ("{a}|b~!#$%&'*/=?^_`@example.com", "{a}|b~!#$%&'*/=?^_`@example.com"),
        ("a,b@example.com", '"a,b"@example.com'),
        ("a\x7fb@example.com", '"a\x7fb"@example.com'),
        ("\u00e9.\u00f8@example.com", "\u00e9.\u00f8@example.com"),
        ("a\\b@example.com", '"a\\\\b"@example.com'),
        ("", ""),
    ],
)
def test_quote_local(address: str, quoted: str) -> None:
    assert quote_local(address) == quoted
    if address:
        assert parse_address(f"<{quoted}>") == address


# -- replies ------------------------------------------------------------------------------


def test_reply_lines_gather_a_multiline_reply() -> None:
    reader = ReplyLines()
    assert reader.add(b"250-mx.test\r\n") is None
    assert reader.add(b"250-PIPELINING\r\n") is None
    assert reader.add(b"250 SIZE 1000\r\n") == Reply(250, "mx.test\nPIPELINING\nSIZE 1000")
    assert reader.add(b"354 go") == Reply(354, "go")
    assert reader.add(b"221") == Reply(221, "")


@pytest.mark.parametrize("bad", [b"HTTP/1.1 400 Bad Request", b"25", b"abc def", b""])
def test_reply_lines_refuse_what_is_not_a_reply(bad: bytes) -> None:
    with pytest.raises(NotAReply):
        ReplyLines().add(bad)


def test_reply_lines_bound_the_line_count() -> None:
    reader = ReplyLines(max_lines=2)
    reader.add(b"250-a")
    reader.add(b"250-b")
    with pytest.raises(NotAReply):
        reader.add(b"250 c")


def test_reply_text_status_and_enhanced_code() -> None:
    got = Reply(550, "5.1.1 <u@d>: unknown\nsecond line")
    assert (got.status, got.dsn) == ("bounced", "5.1.1")
    assert str(got) == "550 5.1.1 <u@d>: unknown second line"
    assert Reply(451, "5.1.1 mismatch").dsn == "4.0.0"  # the class digit must agree


def test_ehlo_features() -> None:
    text = "mx.test\nPIPELINING\nSIZE 10240000\nAUTH=LOGIN\nAUTH LOGIN PLAIN\n8BITMIME\nDSN"
    assert ehlo_features(text) == {
        "pipelining": "", "size": "10240000", "auth": "LOGIN PLAIN", "8bitmime": "", "dsn": "",
    }
    assert ehlo_features("mx.test\nAUTH=LOGIN")["auth"] == "LOGIN"
