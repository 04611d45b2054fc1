"""Our notices against Postfix 3.7's, line for line.

A private Postfix relays each case's message to a loopback SMTP peer that
refuses ``bounce*`` recipients (550), defers ``defer*`` ones (451) and
takes the rest; Postfix's non-delivery, delay, success and postmaster
notices come back to the same peer and are recorded, normalized (queue
IDs, dates, times and the peer's port), in ``tests/data/postfix/notices.json``.
The same situations are then given to our :class:`qmgr.bouncer.Bouncer`
(the message content is the one Postfix queued: its headers as returned,
with the body the test sent) and what it queues must read the same.

Where Postfix cannot run, the recorded notices are used.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from postbus.servers import free_port, wait_port
from qmgr.bouncer import Bouncer
from tests import postfix_instance
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("notices")
TEMPLATES = Path(__file__).parent.parent / "data" / "notices" / "templates.cf"

NOTICES = {
    "compatibility_level": "3.6",
    "mail_name": "Postbus",
    "myhostname": "mx.postbus.test",
    "mydomain": "postbus.test",
    "notify_classes": "bounce, 2bounce, delay, resource, software",
    "bounce_notice_recipient": "pm-bounce@sink.test",
    "2bounce_notice_recipient": "pm-2bounce@sink.test",
    "delay_notice_recipient": "pm-delay@sink.test",
    "bounce_size_limit": "2000",
}
VARIANTS = {
    # a warning at the first deferral
    "warn": {"delay_warning_time": "1s"},
    # bounced at the first deferral
    "expire": {"maximal_queue_lifetime": "0", "bounce_queue_lifetime": "0"},
    # References: and In-Reply-To: the returned message's Message-ID
    "thread": {"enable_threaded_bounces": "yes"},
    # the words of bounce_template_file: subjects, From: (qualified), text
    "template": {"delay_warning_time": "1s", "bounce_template_file": str(TEMPLATES)},
}
POSTFIX_ONLY = {
    "virtual_alias_maps": "inline:{alias@remote.test=bounce4@remote.test}",
    "smtp_dns_support_level": "disabled",
}
RELAY = "127.0.0.1[127.0.0.1]:10025"  # ours; Postfix's port is normalized away
SAID = "host 127.0.0.1[127.0.0.1] said: {reply} (in reply to RCPT TO command)"
REFUSED = "550 5.1.1 <{0}>: Recipient address rejected: User unknown"
DEFERRED = "451 4.3.0 <{0}>: Temporary lookup failure"
ACCEPTED = "250 2.0.0 Ok: queued as SINK1"
BODY = (b"From: Alice <alice@client.test>\r\nTo: x\r\nSubject: hi\r\n"
        b"Message-ID: <m1@client.test>\r\n\r\nbody line\r\n")
BIG = BODY + b"".join(b"%04d the same line again and again to pass the limit\r\n" % i
                      for i in range(60))


# -- the peer ---------------------------------------------------------------------------

@dataclass
class Sink:
    """Answers each RCPT by its local part; keeps the notices it takes."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        local = address.split("@")[0]
        if local.startswith("bounce"):
            return REFUSED.format(address)
        if local.startswith("defer"):
            return DEFERRED.format(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        if sender in ("", "double-bounce@mx.postbus.test"):  # a notice, not a relayed message
            with self.lock:
                self.messages.append((sender, list(envelope.rcpt_tos),
                                      envelope.original_content or b""))
        return ACCEPTED

    def take(self, count: int, timeout: float = 30.0) -> list[tuple[str, list[str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    taken, self.messages = self.messages, []
                    return taken
            time.sleep(0.05)
        raise AssertionError(f"expected {count} notices, got {len(self.messages)}")


class LivePostfix:
    """A private Postfix that relays to a :class:`Sink`."""

    def __init__(self, variant: str) -> None:
        self.sink = Sink()
        self.peer = Controller(self.sink, hostname="127.0.0.1", port=free_port(),
                               decode_data=False)
        self.port = free_port()
        self.instance = postfix_instance.PostfixInstance(self.port, {
            **NOTICES, **VARIANTS[variant], **POSTFIX_ONLY,
            "relayhost": f"[127.0.0.1]:{self.peer.port}",
        })

    def start(self) -> None:
        self.peer.start()
        self.instance.start()
        wait_port("127.0.0.1", self.port, 20)

    def stop(self) -> None:
        self.instance.stop()
        self.peer.stop()

    def notices(self, case: Case) -> list[dict[str, Any]]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.ehlo("client.example")
            client.mail(case.sender, case.mail_options)
            for address, options in case.rcpt:
                client.rcpt(address, options)
            client.data(case.body)
        got = self.sink.take(case.count)
        return sorted((notice(sender, rcpts, text) for sender, rcpts, text in got),
                      key=lambda n: (n["to"], n["text"][4]))


@pytest.fixture(scope="module")
def postfix() -> Iterator[Callable[[str], LivePostfix | None]]:
    """A running Postfix per variant, started when first asked for (None where
    Postfix cannot run here: the recordings are used)."""
    running: dict[str, LivePostfix] = {}

    def get(variant: str) -> LivePostfix | None:
        if not postfix_instance.available():
            return None
        if variant not in running:
            running[variant] = LivePostfix(variant)
            running[variant].start()
        return running[variant]

    yield get
    for live in running.values():
        live.stop()


# -- normalizing ------------------------------------------------------------------------

_DATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d "
                   r"[+-]\d{4} \(\w+\)")


def notice(sender: str, rcpts: list[str], raw: bytes) -> dict[str, Any]:
    """A notice with what changes from run to run replaced by names."""
    text = raw.decode("utf-8", "surrogateescape")
    reported = re.search(r"X-Postbus-Queue-ID: (\S+)", text)
    own = re.search(r"^\tid (\S+);", text, re.M)
    assert reported and own, text
    text = text.replace(reported.group(1), "ORIGQID").replace(own.group(1), "NOTICEID")
    text = _DATE.sub("DATE", text)
    text = re.sub(r"ORIGQID\.\d+/", "ORIGQID.TIME/", text)
    text = re.sub(r"Message-Id: <\d{14}\.", "Message-Id: <STAMP.", text)
    text = re.sub(r"127\.0\.0\.1\[127\.0\.0\.1\]:\d{5}", "127.0.0.1[127.0.0.1]:PORT", text)
    return {"from": sender, "to": rcpts, "text": text.split("\r\n")}


# -- the cases --------------------------------------------------------------------------

def refused(address: str, **fields: str) -> Recipient:
    values = {"orig_rcpt": address, "state": "bounced", "dsn": "5.1.1",
              "reason": SAID.format(reply=REFUSED.format(address)), "relay": RELAY, **fields}
    return Recipient(address, **values)  # type: ignore[arg-type]


def deferred(address: str, state: str = "deferred", **fields: str) -> Recipient:
    values = {"orig_rcpt": address, "state": state, "dsn": "4.3.0",
              "reason": SAID.format(reply=DEFERRED.format(address)), "relay": RELAY, **fields}
    return Recipient(address, **values)  # type: ignore[arg-type]


ACCEPTED_OK = Recipient("ok@remote.test", orig_rcpt="ok@remote.test", notify="SUCCESS",
                        state="sent", dsn="2.0.0", reason=ACCEPTED, relay=RELAY)


@dataclass
class Case:
    variant: str
    sender: str
    mail_options: list[str]
    rcpt: list[tuple[str, list[str]]]
    count: int  # notices Postfix sends
    recipients: list[Recipient]  # ours, as the delivery agents leave them
    env_id: str = ""
    ret: str = ""
    message_id: str = ""
    body: bytes = BODY
    success: bool = False  # also a success notice for ok@


CASES = {
    # RET=HDRS and ENVID; NOTIFY=FAILURE, none, NEVER; a rewritten recipient; a success
    "failure": Case(
        "warn", "alice@client.test", ["RET=HDRS", "ENVID=env-42"],
        [("bounce1@remote.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;bounce1@remote.test"]),
         ("bounce2@remote.test", []), ("bounce3@remote.test", ["NOTIFY=NEVER"]),
         ("alias@remote.test", []), ("ok@remote.test", ["NOTIFY=SUCCESS"])],
        3,
        [refused("bounce1@remote.test", notify="FAILURE"), refused("bounce2@remote.test"),
         refused("bounce3@remote.test", notify="NEVER"),
         refused("bounce4@remote.test", orig_rcpt="alias@remote.test"), ACCEPTED_OK],
        env_id="env-42", ret="HDRS", success=True,
    ),
    # no RET: the whole message comes back
    "full": Case("warn", "bob@client.test", [], [("bounce1@remote.test", [])], 2,
                 [refused("bounce1@remote.test")]),
    # RET=FULL past bounce_size_limit: the headers only
    "big": Case("warn", "carol@client.test", ["RET=FULL"], [("bounce1@remote.test", [])], 2,
                [refused("bounce1@remote.test")], ret="FULL", body=BIG),
    # a bounce that bounces: to 2bounce_notice_recipient
    "null": Case("warn", "", [], [("bounce1@remote.test", [])], 1,
                 [refused("bounce1@remote.test")]),
    # a delay warning and its postmaster copy: NOTIFY=FAILURE is left out of the first
    "delay": Case(
        "warn", "dave@client.test", [],
        [("defer1@remote.test", []), ("defer2@remote.test", ["NOTIFY=FAILURE"]),
         ("defer3@remote.test", ["NOTIFY=SUCCESS,DELAY"])],
        2,
        [deferred("defer1@remote.test"), deferred("defer2@remote.test", notify="FAILURE"),
         deferred("defer3@remote.test", notify="SUCCESS,DELAY")],
    ),
    # expired: the last deferral's words and status, returned as a failure
    "expire": Case(
        "expire", "erin@client.test", [],
        [("defer1@remote.test", []), ("defer2@remote.test", ["NOTIFY=DELAY"])],
        2,
        [deferred("defer1@remote.test", "expired"),
         deferred("defer2@remote.test", "expired", notify="DELAY")],
    ),
    # a failure, its postmaster copy and a success, in bounce_template_file's words
    "template_failure": Case(
        "template", "grace@client.test", [],
        [("bounce1@remote.test", []), ("ok@remote.test", ["NOTIFY=SUCCESS"])], 3,
        [refused("bounce1@remote.test"), ACCEPTED_OK], success=True,
    ),
    # a delay warning and its postmaster copy (the built-in Postmaster-Subject: kept)
    "template_delay": Case("template", "heidi@client.test", [], [("defer1@remote.test", [])],
                           2, [deferred("defer1@remote.test")]),
    "threaded": Case("thread", "frank@client.test", [], [("bounce1@remote.test", [])], 2,
                     [refused("bounce1@remote.test")], message_id="<m1@client.test>"),
}


def ours(case: Case, postfix_notices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our notices for the case, given the message content Postfix queued."""
    lines = postfix_notices[0]["text"]
    start = lines.index("Return-Path: <" + (case.sender or "MAILER-DAEMON@mx.postbus.test")
                        + ">") + 1
    headers = lines[start : lines.index("", start)]
    content = "\r\n".join(headers).encode() + b"\r\n\r\n" + case.body.split(b"\r\n\r\n", 1)[1]
    cfg = Config.from_text("".join(f"{k} = {v}\n" for k, v in {
        **NOTICES, **VARIANTS[case.variant]}.items() if k != "maximal_queue_lifetime"))
    entry = QueueEntry("ORIGQID", case.sender, case.recipients, env_id=case.env_id,
                       ret=case.ret, message_id=case.message_id, arrival_time=time.time() - 2)
    queued: list[tuple[QueueEntry, bytes]] = []

    async def enqueue(notice_entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        queued.append((notice_entry, build("NOTICEID")))
        return "NOTICEID"

    async def content_of(_: QueueEntry) -> bytes:
        return content

    async def run() -> None:
        bouncer = Bouncer(lambda: cfg, enqueue, content_of)
        if any(r.state == "deferred" for r in entry.recipients):
            await bouncer.delay(entry)
        else:
            await bouncer.failure(entry)
        if case.success:
            await bouncer.success(entry, [(ACCEPTED_OK, "relayed")])

    asyncio.run(run())
    return sorted((notice(e.sender, [r.address for r in e.recipients], text)
                   for e, text in queued), key=lambda n: (n["to"], n["text"][4]))


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.parametrize("name", list(CASES))
def test_notices_read_as_postfix_writes_them(
    name: str, postfix: Callable[[str], LivePostfix | None]
) -> None:
    case = CASES[name]
    live = postfix(case.variant)
    expected = RECORDING.answer(name, None if live is None else lambda: live.notices(case))
    assert len(expected) == case.count
    got = ours(case, expected)
    assert [(n["from"], n["to"]) for n in got] == [(n["from"], n["to"]) for n in expected]
    for mine, theirs in zip(got, expected, strict=True):
        diff = "\n".join(difflib.unified_diff(theirs["text"], mine["text"], "postfix", "ours",
                                              lineterm=""))
        assert mine["text"] == theirs["text"], diff
