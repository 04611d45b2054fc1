"""cleanup: header block, added headers, Received header."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ingress_smtpd.cleanup import Message, mail_date, split_headers
from postbus.smtp.address import MailArgs, RcptArgs


def test_split_headers() -> None:
    content = (b"Subject: s\r\nMessage-ID:\r\n <id@x>\r\nX-Folded: a\r\n\tb\r\n\r\nbody\r\n")
    headers = split_headers(content, 102400)
    assert headers.seen == {"subject", "message-id", "x-folded"}
    assert headers.message_id == "<id@x>"
    assert headers.block + headers.body == content
    assert headers.body == b"\r\nbody\r\n"


def test_split_headers_stops_at_a_non_header_line() -> None:
    headers = split_headers(b"Subject: s\r\nnot a header\r\nmore\r\n", 102400)
    assert headers.block == b"Subject: s\r\n"
    assert headers.body == b"not a header\r\nmore\r\n"


def test_header_size_limit_discards_the_excess() -> None:
    big = b"X-Big: " + b"a" * 50 + b"\r\n" + b"\tb\r\n" * 100
    headers = split_headers(b"Subject: s\r\n" + big + b"To: t\r\n\r\n", 100)
    # as Postfix: lines are added while the header is shorter than the limit (57 + 15
    # times 3 = 102), then cut at the last line boundary within it (≈ cleanup_out_header())
    assert headers.block == b"Subject: s\r\nX-Big: " + b"a" * 50 + b"\r\n" + \
        b"\tb\r\n" * 14 + b"To: t\r\n"


def test_mail_date_looks_like_postfix() -> None:
    text = mail_date(time.mktime((2025, 11, 5, 13, 28, 55, 0, 0, -1)))
    assert text.startswith("Wed,  5 Nov 2025 13:28:55 ")


def message(**changes: Any) -> Message:
    base = Message(
        sender="s@example.org", mail=MailArgs("s@example.org"),
        recipients=[RcptArgs("a b@example.org")], content=b"Subject: s\r\n\r\nbody\r\n",
        client_name="unknown", client_addr="2001:db8::1", helo="client.example",
        protocol="ESMTP", myhostname="mx.example", mail_name="Postbus",
        header_size_limit=102400, add_missing=True, arrival=1_700_000_000.0,
    )
    return dataclasses.replace(base, **changes)


def test_build_adds_missing_headers_for_local_clients() -> None:
    msg = message()
    entry = msg.entry()
    entry.queue_id = "ABCDEF12345"
    out = msg.build(entry)
    lines = out.split(b"\r\n")
    assert lines[0] == b"Received: from client.example (unknown [IPv6:2001:db8::1])"
    assert lines[1] == b"\tby mx.example (Postbus) with ESMTP id ABCDEF12345"
    assert lines[2].startswith(b'\tfor <"a b"@example.org>; ')
    assert lines[3] == b"Subject: s"
    assert lines[4].startswith(b"Message-Id: <") and lines[4].endswith(b".ABCDEF12345@mx.example>")
    assert lines[5].startswith(b"Date: ") and lines[6] == b"From: s@example.org"
    assert lines[7:] == [b"", b"body", b""]
    assert entry.message_id == msg.message_id == lines[4][12:].decode()


def test_build_adds_nothing_for_remote_clients_and_separates_body() -> None:
    msg = message(add_missing=False, content=b"no headers here\r\n")
    entry = msg.entry()
    entry.queue_id = "ABCDEF12345"
    out = msg.build(entry)
    assert out.endswith(b"\r\n\r\nno headers here\r\n")
    assert b"Message-Id" not in out and entry.message_id == ""
