"""Composed notices: golden files (``data/<case>.ref``, byte for byte) and every
field read back with Python's ``email`` package.

The golden files were checked line by line against what Postfix 3.7's
bounce(8) writes for the same situations (tests/integration/
test_notices_vs_postfix.py compares with a live Postfix). Regenerate them
with ``POSTBUS_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import os
import time
from collections.abc import Callable, Iterator
from email import policy as email_policy
from pathlib import Path

import pytest

from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from qmgr.bouncer import Bouncer
from qmgr.dsn_report import line_wrap

DATA = Path(__file__).parent / "data"
REGEN = os.environ.get("POSTBUS_REGEN_GOLDEN") == "1"
NOW = 1_800_000_000.0  # Fri, 15 Jan 2027 08:00:00 UTC
ARRIVAL = NOW - 4 * 3600 - 10
BASE = {
    "compatibility_level": "3.6",
    "myhostname": "mx.postbus.test",
    "mydomain": "postbus.test",
    "notify_classes": "bounce, 2bounce, delay, resource, software",
    "delay_warning_time": "4h",
}
SAID = ("host mx.remote.test[192.0.2.7] said: 550 5.1.1 <{0}>: Recipient address rejected: "
        "User unknown in virtual mailbox table (in reply to RCPT TO command)")
DEFER = "connect to mx.remote.test[192.0.2.7]:25: Connection refused"
CONTENT = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n"
    b"\tby mx.postbus.test (Postbus) with ESMTP id 4Q1X2Y3Z4W\r\n"
    b"\tfor <a@remote.test>; Fri, 15 Jan 2027 03:59:50 +0000 (UTC)\r\n"
    b"From: Alice <alice@client.test>\r\n"
    b"Subject: the report\r\n"
    b"Message-ID: <m1@client.test>\r\n"
    b"\r\n"
    b"First line of the body.\r\n"
    b"Second line.\r\n"
)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """mail_date() writes local time: pin the zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def config(**settings: str) -> Config:
    merged = {**BASE, **settings}
    return Config.from_text("".join(f"{k} = {v}\n" for k, v in merged.items()))


def bounced(address: str, **fields: str) -> Recipient:
    values = {"orig_rcpt": address, "state": "bounced", "dsn": "5.1.1",
              "reason": SAID.format(address), "relay": "mx.remote.test[192.0.2.7]:25", **fields}
    return Recipient(address, **values)  # type: ignore[arg-type]


def deferred(address: str, **fields: str) -> Recipient:
    values = {"orig_rcpt": address, "state": "deferred", "dsn": "4.4.1", "reason": DEFER,
              "relay": "none", **fields}
    return Recipient(address, **values)  # type: ignore[arg-type]


def entry(sender: str, rcpts: list[Recipient], **fields: object) -> QueueEntry:
    return QueueEntry("4Q1X2Y3Z4W", sender, rcpts, arrival_time=ARRIVAL,
                      message_id="<m1@client.test>", **fields)  # type: ignore[arg-type]


def queue(
    call: Callable[[Bouncer], object], content: bytes = CONTENT, **settings: str
) -> list[tuple[QueueEntry, bytes]]:
    cfg = config(**settings)
    queued: list[tuple[QueueEntry, bytes]] = []

    async def enqueue(notice: QueueEntry, build: Callable[[str], bytes]) -> str:
        new_id = f"4Q9N{len(queued) + 1}TICE"
        queued.append((notice, build(new_id)))
        return new_id

    async def read(_: QueueEntry) -> bytes:
        return content

    bouncer = Bouncer(lambda: cfg, enqueue, read, clock=lambda: NOW)
    asyncio.run(call(bouncer))  # type: ignore[arg-type]
    return queued


def golden(name: str, text: bytes) -> None:
    ref = DATA / f"{name}.ref"
    if REGEN:
        DATA.mkdir(exist_ok=True)
        ref.write_bytes(text)
    assert text == ref.read_bytes(), f"{ref} differs (POSTBUS_REGEN_GOLDEN=1 rewrites it)"


def parse(text: bytes) -> email.message.Message:
    return email.message_from_bytes(text, policy=email_policy.compat32)


def parts(report: email.message.Message) -> list[email.message.Message]:
    payload = report.get_payload()
    assert isinstance(payload, list)
    return payload


def text_of(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode().replace("\r\n", "\n")


def status_blocks(report: email.message.Message) -> list[dict[str, str]]:
    blocks = parts(parts(report)[1])
    return [{k: " ".join(v.split()) for k, v in block.items()} for block in blocks]


# -- line wrapping (≈ line_wrap(str, 79, 4)) -----------------------------------------------

@pytest.mark.parametrize(("text", "lines"), [
    # what Postfix 3.7 wrote for these (seen in its bounces)
    ("<bounce1@remote.test>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <bounce1@remote.test>: "
     "Recipient address rejected: User unknown (in reply to RCPT TO command)",
     ["<bounce1@remote.test>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1",
      "    <bounce1@remote.test>: Recipient address rejected: User unknown (in reply",
      "    to RCPT TO command)"]),
    ("Diagnostic-Code: smtp; 451 4.3.0 <defer1@remote.test>: Temporary lookup failure",
     ["Diagnostic-Code: smtp; 451 4.3.0 <defer1@remote.test>: Temporary lookup failure"]),
    ("x" * 79, ["x" * 79]),
    ("x" * 78 + " y", ["x" * 78, "    y"]),
    ("x" * 100 + " y", ["x" * 100, "    y"]),  # a long word stays whole
    ("a  b" + " c" * 40, ["a  b" + " c" * 37, "    c c c"]),
    ("", [""]),
    ("trailing   ", ["trailing"]),
])
def test_line_wrap(text: str, lines: list[str]) -> None:
    assert line_wrap(text) == lines


# -- failure ---------------------------------------------------------------------------

def test_failure_golden_and_fields() -> None:
    e = entry("alice@client.test", [
        bounced("a@remote.test", notify="FAILURE"),
        bounced("final@remote.test", orig_rcpt="alias@remote.test"),
        bounced("c@remote.test", notify="NEVER"),
    ], env_id="env-42", ret="HDRS")
    (sender_notice, text), (copy, copy_text) = queue(lambda b: b.failure(e))
    golden("failure", text)
    golden("failure-postmaster", copy_text)

    report = parse(text)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report.get_boundary() == "4Q1X2Y3Z4W.1800000000/mx.postbus.test"
    assert [(k, " ".join(v.split())) for k, v in report.items()] == [
        ("Received", "by mx.postbus.test (Postbus) id 4Q9N1TICE; Fri, 15 Jan 2027 08:00:00 "
                     "+0000 (UTC)"),
        ("Date", "Fri, 15 Jan 2027 08:00:00 +0000 (UTC)"),
        ("From", "Mail Delivery System <MAILER-DAEMON@mx.postbus.test>"),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("To", "alice@client.test"),
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
        ("Content-Type", 'multipart/report; report-type=delivery-status; '
                         'boundary="4Q1X2Y3Z4W.1800000000/mx.postbus.test"'),
        ("Content-Transfer-Encoding", "8bit"),
        ("Message-Id", "<20270115080000.4Q9N1TICE@mx.postbus.test>"),
    ]
    notification, status, returned = parts(report)
    assert (notification["Content-Description"], notification.get_content_type(),
            notification.get_content_charset()) == ("Notification", "text/plain", "utf-8")
    body = text_of(notification)
    assert body.startswith("This is the mail system at host mx.postbus.test.\n\n"
                           "I'm sorry to have to inform you")
    assert "<final@remote.test> (expanded from <alias@remote.test>): host" in body
    assert "c@remote.test" not in body  # NOTIFY=NEVER
    assert (status["Content-Description"], status.get_content_type()) == (
        "Delivery report", "message/delivery-status")
    assert status_blocks(report) == [
        {"Reporting-MTA": "dns; mx.postbus.test", "Original-Envelope-Id": "env-42",
         "X-Postbus-Queue-ID": "4Q1X2Y3Z4W", "X-Postbus-Sender": "rfc822; alice@client.test",
         "Arrival-Date": "Fri, 15 Jan 2027 03:59:50 +0000 (UTC)"},
        {"Final-Recipient": "rfc822; a@remote.test",
         "Original-Recipient": "rfc822;a@remote.test", "Action": "failed", "Status": "5.1.1",
         "Remote-MTA": "dns; mx.remote.test",
         "Diagnostic-Code": "smtp; 550 5.1.1 <a@remote.test>: Recipient address rejected: "
                            "User unknown in virtual mailbox table"},
        {"Final-Recipient": "rfc822; final@remote.test",
         "Original-Recipient": "rfc822;alias@remote.test", "Action": "failed",
         "Status": "5.1.1", "Remote-MTA": "dns; mx.remote.test",
         "Diagnostic-Code": "smtp; 550 5.1.1 <final@remote.test>: Recipient address rejected: "
                            "User unknown in virtual mailbox table"},
    ]
    # RET=HDRS: the headers, behind the Return-Path Postfix adds
    assert (returned["Content-Description"], returned.get_content_type()) == (
        "Undelivered Message Headers", "text/rfc822-headers")
    assert returned.get_payload() == (
        "Return-Path: <alice@client.test>\r\n" + CONTENT.split(b"\r\n\r\n")[0].decode()
        + "\r\n")

    # the postmaster copy: every recipient, no boiler-plate, from the double-bounce sender
    assert (copy.sender, copy.recipients[0].address) == (
        "double-bounce@mx.postbus.test", "postmaster@mx.postbus.test")
    copy_report = parse(copy_text)
    assert (copy_report["Subject"], copy_report["To"], copy_report["Auto-Submitted"]) == (
        "Postmaster Copy: Undelivered Mail", "postmaster@mx.postbus.test", "auto-generated")
    assert text_of(parts(copy_report)[0]).startswith("\n<a@remote.test>: host")
    assert [b.get("Final-Recipient") for b in status_blocks(copy_report)[1:]] == [
        "rfc822; a@remote.test", "rfc822; final@remote.test", "rfc822; c@remote.test"]
    assert sender_notice.sender == "" and sender_notice.recipients[0].address == (
        "alice@client.test")


def test_full_message_returned_unless_past_bounce_size_limit() -> None:
    e = entry("alice@client.test", [bounced("a@remote.test")])
    ((_, text),) = queue(lambda b: b.failure(e), notify_classes="")
    golden("failure-full", text)
    returned = parts(parse(text))[2]
    assert (returned["Content-Description"], returned.get_content_type()) == (
        "Undelivered Message", "message/rfc822")
    inner = returned.get_payload()[0]
    assert (inner["Return-Path"], inner["Subject"], inner.get_payload()) == (
        "<alice@client.test>", "the report", "First line of the body.\r\nSecond line.\r\n")

    for limit, headers_only in (("1000", False), (str(len(CONTENT)), False),
                                (str(len(CONTENT) - 1), True)):
        ((_, text),) = queue(lambda b: b.failure(e), notify_classes="",
                             bounce_size_limit=limit)
        returned = parts(parse(text))[2]
        assert (returned.get_content_type() == "text/rfc822-headers") is headers_only, limit
        assert (b"Second line." in text) is not headers_only


def test_bounce_of_a_bounce_goes_to_postmaster_whole() -> None:
    e = entry("", [bounced("a@remote.test")])
    ((notice, text),) = queue(lambda b: b.failure(e))
    golden("double-bounce", text)
    assert (notice.sender, notice.recipients[0].address) == (
        "double-bounce@mx.postbus.test", "postmaster@mx.postbus.test")
    report = parse(text)
    assert report["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert status_blocks(report)[0]["X-Postbus-Sender"] == "rfc822; MAILER-DAEMON@mx.postbus.test"
    returned = parts(report)[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload()[0]["Return-Path"] == "<MAILER-DAEMON@mx.postbus.test>"


# -- delay and success -------------------------------------------------------------------

def test_delay_warning_golden_and_fields() -> None:
    e = entry("alice@client.test", [deferred("a@remote.test"),
                                    deferred("b@remote.test", notify="FAILURE")])
    (_, text), (_, copy_text) = queue(lambda b: b.delay(e))
    golden("delay", text)
    golden("delay-postmaster", copy_text)
    report = parse(text)
    assert (report["Subject"], report["Auto-Submitted"]) == (
        "Delayed Mail (still being retried)", "auto-replied")
    body = text_of(parts(report)[0])
    assert "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" in body
    assert ("Your message could not be delivered for more than 4 hour(s).\n"
            "It will be retried until it is 5 day(s) old.") in body
    assert status_blocks(report)[1] == {
        "Final-Recipient": "rfc822; a@remote.test", "Original-Recipient": "rfc822;a@remote.test",
        "Action": "delayed", "Status": "4.4.1",
        "Diagnostic-Code": "X-Postbus; connect to mx.remote.test[192.0.2.7]:25: Connection "
                           "refused",
        "Will-Retry-Until": "Wed, 20 Jan 2027 03:59:50 +0000 (UTC)",
    }
    assert len(status_blocks(report)) == 2  # b@ asked for FAILURE only
    returned = parts(report)[2]  # always the headers only
    assert (returned["Content-Description"], returned.get_content_type()) == (
        "Undelivered Message Headers", "text/rfc822-headers")
    copy = parse(copy_text)
    assert copy["Subject"] == "Postmaster Warning: Delayed Mail"
    assert len(status_blocks(copy)) == 3


def test_success_notice_golden_and_fields() -> None:
    ok = Recipient("a@remote.test", orig_rcpt="a@remote.test", notify="SUCCESS", state="sent",
                   dsn="2.0.0", reason="250 2.0.0 Ok: queued as 7F3A", relay=(
                       "mx.remote.test[192.0.2.7]:25"))
    local = Recipient("bob@postbus.test", orig_rcpt="bob@postbus.test", notify="SUCCESS,FAILURE",
                      state="sent", dsn="2.0.0", reason="delivered to maildir", relay="local")
    e = entry("alice@client.test", [ok, local], ret="FULL")
    ((_, text),) = queue(lambda b: b.success(e, [(ok, "relayed"), (local, "delivered")]))
    golden("success", text)
    report = parse(text)
    assert report["Subject"] == "Successful Mail Delivery Report"
    body = text_of(parts(report)[0])
    assert ("<a@remote.test>: delivery via mx.remote.test[192.0.2.7]:25: 250 2.0.0 Ok: queued"
            " as 7F3A") in " ".join(body.split())
    assert "<bob@postbus.test>: delivery via local: delivered to maildir" in body
    blocks = status_blocks(report)
    assert [(b["Action"], b["Status"], b.get("Remote-MTA"), b["Diagnostic-Code"])
            for b in blocks[1:]] == [
        ("relayed", "2.0.0", "dns; mx.remote.test", "smtp; 250 2.0.0 Ok: queued as 7F3A"),
        ("delivered", "2.0.0", None, "X-Postbus; delivery via local: delivered to maildir"),
    ]
    returned = parts(report)[2]  # headers only, whatever RET said; not "Undelivered"
    assert (returned["Content-Description"], returned.get_content_type()) == (
        "Message Headers", "text/rfc822-headers")


# -- MIME encodings, SMTPUTF8, threads --------------------------------------------------

def test_without_smtputf8_enable_the_report_is_ascii_without_encoding() -> None:
    e = entry("alice@client.test", [bounced("a@remote.test")])
    ((_, text),) = queue(lambda b: b.failure(e), notify_classes="", smtputf8_enable="no")
    report = parse(text)
    assert report["Content-Transfer-Encoding"] is None
    notification, _, returned = parts(report)
    assert notification.get_content_charset() == "us-ascii"
    assert notification["Content-Transfer-Encoding"] is None
    assert returned["Content-Transfer-Encoding"] is None
    # 8-bit content makes it 8bit again
    eight_bit = CONTENT.replace(b"Second", b"Zw\xc3\xb6lf")
    ((_, text),) = queue(lambda b: b.failure(e), content=eight_bit, notify_classes="",
                         smtputf8_enable="no")
    assert parse(text)["Content-Transfer-Encoding"] == "8bit"


def test_smtputf8_message_gets_global_types_and_utf8_addresses() -> None:
    e = entry("\u00e5sa@client.test", [bounced("\u00fcser@remote.test")], smtputf8=True)
    ((_, text),) = queue(lambda b: b.failure(e), notify_classes="")
    golden("failure-smtputf8", text)
    report = email.message_from_bytes(text, policy=email_policy.SMTPUTF8)
    status = parts(report)[1]
    assert status.get_content_type() == "message/global-delivery-status"
    assert status["Content-Transfer-Encoding"] == "8bit"
    assert parts(report)[2].get_content_type() == "message/global"
    assert "X-Postbus-Sender: utf-8; \u00e5sa@client.test" in text.decode()
    assert "Final-Recipient: utf-8; \u00fcser@remote.test" in text.decode()
    assert "Original-Recipient: rfc822;\u00fcser@remote.test" in text.decode()


def test_threaded_bounces_refer_to_the_message() -> None:
    e = entry("alice@client.test", [bounced("a@remote.test")])
    ((_, text),) = queue(lambda b: b.failure(e), notify_classes="", enable_threaded_bounces="yes")
    report = parse(text)
    assert (report["References"], report["In-Reply-To"]) == (
        "<m1@client.test>", "<m1@client.test>")
    keys = list(report.keys())
    assert keys.index("To") + 1 == keys.index("References")
    assert keys.index("In-Reply-To") + 1 == keys.index("Auto-Submitted")
    ((_, text),) = queue(lambda b: b.failure(e), notify_classes="")
    assert parse(text)["References"] is None


def test_template_words_follow_the_configuration() -> None:
    e = entry("alice@client.test", [deferred("a@remote.test")])
    ((_, text),) = queue(lambda b: b.delay(e), notify_classes="", delay_warning_time="1d",
                         maximal_queue_lifetime="2w", myhostname="xn--bcher-kva.postbus.test")
    decoded = text_of(parts(parse(text))[0])
    assert "This is the mail system at host b\u00fccher.postbus.test." in decoded
    assert "for more than 24 hour(s).\nIt will be retried until it is 14 day(s) old." in decoded
    assert "Reporting-MTA: dns; xn--bcher-kva.postbus.test" in text.decode()


def test_line_wrap_counts_octets_as_postfix() -> None:
    text = "\u00fc" * 39 + " x"  # 41 characters, 80 octets
    assert line_wrap(text) == ["\u00fc" * 39, "    x"]
    assert line_wrap("\u00fc" * 38 + " x") == ["\u00fc" * 38 + " x"]
