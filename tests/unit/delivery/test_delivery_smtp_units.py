"""delivery-smtp pieces that need no network: next hops, the DATA encoding, addresses."""

from __future__ import annotations

import re

import pytest

from delivery_smtp.connect import NextHop, parse_nexthops
from delivery_smtp.session import _Wire, message_data
from postbus.smtp.reply import Reply


@pytest.mark.parametrize(
    ("nexthop", "lmtp", "hops"),
    [
        ("[mail.example.com]:587", False, [NextHop("mail.example.com", 587, False)]),
        ("[192.0.2.1]", False, [NextHop("192.0.2.1", 25, False)]),
        ("example.com", False, [NextHop("example.com", 25, True)]),
        ("example.com:2525", False, [NextHop("example.com", 2525, True)]),
        ("192.0.2.1", False, [NextHop("192.0.2.1", 25, False)]),
        ("[ipv6:2001:db8::1]:26", False, [NextHop("ipv6:2001:db8::1", 26, False)]),
        ("[a.test]:smtp, b.test", False,
         [NextHop("a.test", 25, False), NextHop("b.test", 25, True)]),
        ("inet:lmtp.test:24", True, [NextHop("lmtp.test", 24, False)]),
        ("lmtp.test", True, [NextHop("lmtp.test", 24, False)]),
        ("unix:/run/dovecot/lmtp", True, [NextHop("/run/dovecot/lmtp", 0, False,
                                                  path="/run/dovecot/lmtp")]),
    ],
)
def test_parse_nexthops(nexthop: str, lmtp: bool, hops: list[NextHop]) -> None:
    assert parse_nexthops(nexthop, 24 if lmtp else 25, lmtp) == hops


@pytest.mark.parametrize("bad", ["[unclosed", "[]:25", "[h]x", ""])
def test_parse_nexthops_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_nexthops(bad, 25)


# -- the reply reader shared by SMTP and LMTP ----------------------------------------


def test_replies_are_whole_in_order_and_split_anywhere() -> None:
    wire = _Wire()
    stream = b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n250 2.1.0 Ok\r\n354 go\r\n"
    for i in range(0, len(stream), 7):  # arbitrary segment boundaries
        wire.data_received(stream[i : i + 7])
    assert list(wire.replies) == [
        Reply(250, "mx.test\nPIPELINING\nSIZE 1000"), Reply(250, "2.1.0 Ok"), Reply(354, "go"),
    ]
    assert str(wire.replies[0]) == "250 mx.test PIPELINING SIZE 1000"


def test_garbage_ends_the_conversation_after_the_good_replies() -> None:
    wire = _Wire()
    wire.data_received(b"250 2.1.0 Ok\r\nHTTP/1.1 400 Bad Request\r\n250 Ok\r\n")
    assert list(wire.replies) == [Reply(250, "2.1.0 Ok")]
    assert wire.closed


async def test_tls_settings_read_cafile_and_capath_and_lmtp_twins() -> None:
    from delivery_smtp.settings import Settings
    from delivery_smtp.tls_client import ClientTls
    from delivery_smtp.tls_policy import TlsPolicies
    from postbus.config.loader import Config

    cfg = Config.from_text(
        "smtp_tls_CAfile = /etc/ssl/ca.pem\nsmtp_tls_CApath = /etc/ssl/certs\n"
        "smtp_tls_security_level = encrypt\nlmtp_tls_security_level = may\n"
        "lmtp_lhlo_name = lmtp.example\nsmtp_helo_name = smtp.example\n"
    )
    smtp, lmtp = Settings.from_config(cfg, lmtp=False), Settings.from_config(cfg, lmtp=True)
    client = ClientTls(cfg)
    assert (client.cafile, client.capath) == ("/etc/ssl/ca.pem", "/etc/ssl/certs")
    smtp_policy = await TlsPolicies(cfg).policy("example.com", True)
    lmtp_policy = await TlsPolicies(cfg, lmtp=True).policy("example.com", True)
    assert (smtp_policy.level, smtp.helo_name) == ("encrypt", "smtp.example")  # type: ignore
    assert (lmtp_policy.level, lmtp.helo_name) == ("may", "lmtp.example")  # type: ignore


# -- smtp_line_length_limit ------------------------------------------------------------


def _postfix_text_out(body: bytes, limit: int, record: int = 2048) -> bytes:
    """Postfix's smtp_text_out(), line by line, over queue records of ``record`` octets."""
    out = bytearray()
    for line in body.split(b"\r\n")[:-1]:
        pieces = [line[i : i + record] for i in range(0, len(line), record)] or [b""]
        space = limit
        for n, text in enumerate(pieces):
            cont = n < len(pieces) - 1
            while True:
                if space == limit and text[:1] == b".":
                    out += b"."
                if len(text) >= space:
                    out += text[:space] + b"\r\n"
                    text = text[space:]
                    space = limit
                    if text or cont:
                        out += b" "
                        space -= 1
                    if not text:
                        break
                else:
                    out += text if cont else text + b"\r\n"
                    space = space - len(text) if cont else limit
                    break
    return bytes(out) + b".\r\n"


@pytest.mark.parametrize("length", [0, 1, 997, 998, 999, 1500, 1995, 1996, 2048, 2049, 4096,
                                    5000, 6133, 10000])
@pytest.mark.parametrize("first", [b"a", b"."])
def test_long_lines_broken_as_postfix_breaks_them(length: int, first: bytes) -> None:
    line = (first + b"0123456789" * 1001)[:length]
    body = b"Subject: x\r\n\r\n" + line + b"\r\n.\r\nend\r\n"
    data, folded = message_data(body, 998)
    assert data == _postfix_text_out(body, 998)
    assert folded == (length > 998)
    assert all(len(x) <= 999 for x in data.split(b"\r\n"))  # 998, plus a stuffed dot


def test_a_long_line_is_cut_at_the_limit_and_continued_with_a_space() -> None:
    data, folded = message_data(b"x" * 25 + b"\r\n", 10)
    assert folded
    assert data == b"xxxxxxxxxx\r\n xxxxxxxxx\r\n xxxxxx\r\n.\r\n"
    assert message_data(b"x" * 25 + b"\r\n", 0) == (b"x" * 25 + b"\r\n.\r\n", False)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no line end",
        b"Subject: x\r\n\r\n.dot\r\n" + b"y" * 1200 + b"\r\nend\r\n",  # the usual CRLF content
        b"Subject: x\n\n.dot\n" + b"y" * 1200 + b"\nend",  # lone LFs, no last line end
        b"a\rb\r\n.\r" + b"z" * 2100 + b"\r\r\n",  # lone CRs, a long last line
    ],
)
@pytest.mark.parametrize("limit", [0, 10, 998])
def test_data_is_the_same_with_or_without_lone_line_ends(body: bytes, limit: int) -> None:
    """Content with lone CRs or LFs (not what cleanup queues) is sent as its CRLF twin."""
    canonical = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if canonical and not canonical.endswith(b"\r\n"):
        canonical += b"\r\n"
    data, folded = message_data(body, limit)
    assert (data, folded) == message_data(canonical, limit)
    assert data == (_postfix_text_out(canonical, limit) if folded else
                    re.sub(rb"(?m)^\.", b"..", canonical) + b".\r\n")
    assert folded == (0 < limit < max(map(len, canonical.split(b"\r\n"))))
