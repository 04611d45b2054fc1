"""RFC 2920 pipelining in delivery-smtp, against a recording server and Postfix's smtp-sink.

The recording server keeps every chunk it reads, so the tests see how the
commands travelled: MAIL, RCPT and DATA in one segment when PIPELINING is
offered, one command per segment when it is not, the content in one
segment after the 354. The connector is driven directly (no bus needed).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from delivery_smtp.addr import HostResolver
from delivery_smtp.connect import Connector
from delivery_smtp.reuse import SessionCache
from delivery_smtp.settings import Settings
from postbus.delivery import Outcome, Stats
from postbus.queue.entry import DeliveryJob, Recipient

from .conftest import MESSAGE, need
from .peers import SmtpSink

pytestmark = pytest.mark.integration

BODY = MESSAGE.replace(b"\r\n.leading", b"\r\n..leading") + b".\r\n"  # as sent after DATA
NO_RCPT = "554 5.5.1 Error: no valid recipients"


@dataclass
class Script:
    """What the recording server says, and what it saw."""

    pipelining: bool = True
    lmtp: bool = False
    mail_replies: dict[str, str] = field(default_factory=dict)  # by sender
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # by recipient
    data_reply: str = ""  # "" = 354 when a recipient was accepted, else NO_RCPT
    dot_reply: str = "250 2.0.0 Ok: queued as REMOTE1"
    segments: list[bytes] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    connections: int = 0

    def envelope(self) -> list[bytes]:
        """The chunks read outside EHLO/LHLO, RSET and QUIT."""
        skip = (b"EHLO", b"LHLO", b"RSET", b"QUIT")
        return [s for s in self.segments if not s.startswith(skip)]


class Recorder(asyncio.Protocol):
    def __init__(self, script: Script) -> None:
        self.script = script
        self.buffer = b""
        self.in_data = False
        self.sender = ""
        self.mail_ok = False
        self.rcpts: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.out = transport
        self.script.connections += 1
        self.out.write(b"220 recorder.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.script.segments.append(data)
        self.buffer += data
        while True:
            if self.in_data:
                if self.buffer.startswith(b".\r\n"):
                    end, body = 3, b""
                elif (at := self.buffer.find(b"\r\n.\r\n")) >= 0:
                    end, body = at + 5, self.buffer[: at + 2]
                else:
                    return
                self.buffer = self.buffer[end:]
                self.in_data = False
                self.end_of_data(body)
                continue
            at = self.buffer.find(b"\r\n")
            if at < 0:
                return
            line, self.buffer = self.buffer[:at].decode(), self.buffer[at + 2 :]
            self.script.commands.append(line)
            self.command(line)

    def say(self, *lines: str) -> None:
        self.out.write("".join(f"{line}\r\n" for line in lines).encode())

    def command(self, line: str) -> None:
        verb, _, arg = line.partition(" ")
        address = arg.partition("<")[2].partition(">")[0]
        if verb in ("EHLO", "LHLO"):
            keywords = ["PIPELINING"] if self.script.pipelining else []
            lines = ["recorder.test", *keywords, "8BITMIME"]
            self.say(*(f"250-{k}" for k in lines[:-1]), f"250 {lines[-1]}")
        elif verb == "MAIL":
            reply = self.script.mail_replies.get(address, "250 2.1.0 Ok")
            self.sender, self.mail_ok, self.rcpts = address, reply.startswith("2"), []
            self.say(reply)
        elif verb == "RCPT":
            if not self.mail_ok:
                self.say("503 5.5.1 Error: need MAIL command")
                return
            reply = self.script.rcpt_replies.get(address, "250 2.1.5 Ok")
            if reply.startswith("2"):
                self.rcpts.append(address)
            self.say(reply)
        elif verb == "DATA":
            reply = self.script.data_reply or ("354 go ahead" if self.rcpts else NO_RCPT)
            self.in_data = reply.startswith("354")
            self.say(reply)
        elif verb == "RSET":
            self.mail_ok, self.rcpts = False, []
            self.say("250 2.0.0 Ok")
        elif verb == "QUIT":
            self.say("221 2.0.0 Bye")
            self.out.close()
        else:
            self.say("502 5.5.2 Error: command not recognized")

    def end_of_data(self, body: bytes) -> None:
        if self.rcpts:
            self.script.messages.append((self.sender, list(self.rcpts), body))
        count = len(self.rcpts) if self.script.lmtp else 1
        self.say(*[self.script.dot_reply] * max(count, 1))
        self.mail_ok, self.rcpts = False, []


@dataclass
class Remote:
    script: Script
    port: int


@pytest.fixture
async def recorder() -> AsyncIterator[Remote]:
    script = Script()
    server = await asyncio.get_running_loop().create_server(
        lambda: Recorder(script), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield Remote(script, port)
    finally:
        server.close()


def connector(lmtp: bool = False, caching: bool = True) -> Connector:
    st = Settings(lmtp=lmtp, helo_name="mail.postbus.test", mail_timeout=5, rcpt_timeout=5,
                  data_init_timeout=5, data_done_timeout=5)
    cache = SessionCache(idle_limit=10, time_limit=300, count_limit=0, quit_timeout=2)
    resolver = HostResolver(use_dns=False, dns_servers=[], families=(socket.AF_INET,))
    return Connector(st, resolver, cache, caching=caching)


def job(nexthop: str, rcpts: list[str], sender: str = "alice@postbus.test") -> DeliveryJob:
    return DeliveryJob(
        queue_id="QID", transport="smtp", nexthop=nexthop, sender=sender,
        recipients=[Recipient(r) for r in rcpts], indexes=list(range(len(rcpts))),
        attempt=1, arrival_time=0.0, size=len(MESSAGE), chunks=1,
    )


async def deliver(con: Connector, j: DeliveryJob) -> list[Outcome]:
    outcomes, _ = await con.deliver(j, MESSAGE, Stats(0.0, 0.0, 0.0))
    return outcomes


def said(reply: str, request: str) -> str:
    return f"host 127.0.0.1[127.0.0.1] said: {reply} (in reply to {request})"


SENT = Outcome("sent", "2.0.0", "250 2.0.0 Ok: queued as REMOTE1")


async def test_envelope_in_one_segment_when_pipelining(recorder: Remote) -> None:
    con = connector()
    try:
        got = await deliver(con, job(f"[127.0.0.1]:{recorder.port}", ["b@x.test", "c@x.test"]))
    finally:
        await con.cache.close()
    assert got == [SENT, SENT]
    assert recorder.script.envelope() == [
        b"MAIL FROM:<alice@postbus.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\n"
        b"DATA\r\n",
        BODY,  # the content and the final dot in one write, after the 354
    ]
    assert recorder.script.messages == [
        ("alice@postbus.test", ["b@x.test", "c@x.test"], BODY[:-3])
    ]


async def test_quit_goes_with_the_end_of_data_when_the_session_is_not_kept(
        recorder: Remote) -> None:
    """Without the connection cache QUIT follows "." in the same write, as Postfix's
    smtp_loop() pipelines it; the reply to the "." still decides the outcome."""
    con = connector(caching=False)
    nexthop = f"[127.0.0.1]:{recorder.port}"
    reject = "554 5.7.1 Error: content rejected"
    try:
        got = await deliver(con, job(nexthop, ["b@x.test"]))
        recorder.script.dot_reply = reject
        refused = await deliver(con, job(nexthop, ["c@x.test"]))
    finally:
        await con.cache.close()
    assert got == [SENT]
    assert refused == [Outcome("bounced", "5.7.1", said(reject, "end of DATA command"))]
    assert recorder.script.connections == 2
    assert [s for s in recorder.script.segments if s.endswith(b"QUIT\r\n")] == [
        BODY + b"QUIT\r\n", BODY + b"QUIT\r\n"]
    assert recorder.script.commands.count("QUIT") == 2


async def test_one_command_per_segment_without_pipelining(recorder: Remote) -> None:
    recorder.script.pipelining = False
    con = connector()
    try:
        got = await deliver(con, job(f"[127.0.0.1]:{recorder.port}", ["b@x.test", "c@x.test"]))
    finally:
        await con.cache.close()
    assert got == [SENT, SENT]
    assert recorder.script.envelope() == [
        b"MAIL FROM:<alice@postbus.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"RCPT TO:<c@x.test>\r\n",
        b"DATA\r\n",
        BODY,
    ]


async def test_rejected_mail_in_a_pipeline(recorder: Remote) -> None:
    """Every recipient gets the MAIL FROM reply; the 503s that follow are read, then RSET."""
    reject = "553 5.1.8 <nobody@bad.test>: Sender address rejected: Domain not found"
    recorder.script.mail_replies["nobody@bad.test"] = reject
    con = connector()
    nexthop = f"[127.0.0.1]:{recorder.port}"
    try:
        got = await deliver(con, job(nexthop, ["b@x.test", "c@x.test"], "nobody@bad.test"))
        again = await deliver(con, job(nexthop, ["b@x.test"]))  # the session is still in sync
    finally:
        await con.cache.close()
    failed = Outcome("bounced", "5.1.8", said(reject, "MAIL FROM command"))
    assert got == [failed, failed]
    assert again == [SENT]
    assert recorder.script.connections == 1
    assert recorder.script.commands[1:6] == [
        "MAIL FROM:<nobody@bad.test>", "RCPT TO:<b@x.test>", "RCPT TO:<c@x.test>", "DATA",
        "RSET",  # DATA was refused: end the transaction
    ]
    assert recorder.script.commands[6] == "RSET"  # the probe before reusing the session
    assert len(recorder.script.messages) == 1


async def test_all_recipients_rejected_in_a_pipeline(recorder: Remote) -> None:
    one = "550 5.1.1 <b@x.test>: Recipient address rejected: User unknown"
    two = "450 4.2.0 <c@x.test>: Recipient address rejected: Greylisted"
    recorder.script.rcpt_replies.update({"b@x.test": one, "c@x.test": two})
    con = connector()
    try:
        got = await deliver(con, job(f"[127.0.0.1]:{recorder.port}", ["b@x.test", "c@x.test"]))
    finally:
        await con.cache.close()
    assert got == [
        Outcome("bounced", "5.1.1", said(one, "RCPT TO command")),
        Outcome("deferred", "4.2.0", said(two, "RCPT TO command")),
    ]
    assert recorder.script.commands[1:5] == [
        "MAIL FROM:<alice@postbus.test>", "RCPT TO:<b@x.test>", "RCPT TO:<c@x.test>", "DATA",
    ]
    assert recorder.script.commands[5] == "RSET"
    assert recorder.script.messages == []
    assert not any(b"Hello Bob" in s for s in recorder.script.segments)


async def test_data_accepted_with_nobody_to_send_to_gets_only_the_dot(recorder: Remote) -> None:
    """A server that says 354 after rejecting every RCPT gets "." alone (RFC 2197), not the mail."""
    reject = "550 5.1.1 <b@x.test>: Recipient address rejected: User unknown"
    recorder.script.rcpt_replies["b@x.test"] = reject
    recorder.script.data_reply = "354 go ahead"
    recorder.script.dot_reply = "554 5.5.1 Error: no valid recipients"
    con = connector()
    nexthop = f"[127.0.0.1]:{recorder.port}"
    try:
        got = await deliver(con, job(nexthop, ["b@x.test"]))
        recorder.script.data_reply = ""
        recorder.script.dot_reply = SENT.reason
        again = await deliver(con, job(nexthop, ["c@x.test"]))
    finally:
        await con.cache.close()
    assert got == [Outcome("bounced", "5.1.1", said(reject, "RCPT TO command"))]
    assert again == [SENT]
    assert recorder.script.envelope()[:2] == [
        b"MAIL FROM:<alice@postbus.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
        b".\r\n",
    ]
    assert recorder.script.connections == 1
    assert not any(b"Hello Bob" in s for s in recorder.script.segments[:4])


async def test_mixed_recipient_results_in_a_pipeline(recorder: Remote) -> None:
    soft = "452 4.5.3 Error: too many recipients"
    hard = "550 5.1.1 <d@x.test>: Recipient address rejected: User unknown"
    recorder.script.rcpt_replies.update({"c@x.test": soft, "d@x.test": hard})
    con = connector()
    try:
        rcpts = ["b@x.test", "c@x.test", "d@x.test", "e@x.test"]
        got = await deliver(con, job(f"[127.0.0.1]:{recorder.port}", rcpts))
    finally:
        await con.cache.close()
    assert got == [
        SENT,
        Outcome("deferred", "4.5.3", said(soft, "RCPT TO command")),
        Outcome("bounced", "5.1.1", said(hard, "RCPT TO command")),
        SENT,
    ]
    assert recorder.script.messages == [
        ("alice@postbus.test", ["b@x.test", "e@x.test"], BODY[:-3])
    ]
    assert len(recorder.script.envelope()) == 2  # envelope, then content


async def test_rejected_data_after_accepted_recipients(recorder: Remote) -> None:
    reject = "451 4.3.0 Error: queue file write error"
    recorder.script.data_reply = reject
    con = connector()
    try:
        got = await deliver(con, job(f"[127.0.0.1]:{recorder.port}", ["b@x.test", "c@x.test"]))
    finally:
        await con.cache.close()
    failed = Outcome("deferred", "4.3.0", said(reject, "DATA command"))
    assert got == [failed, failed]
    assert recorder.script.commands[4:6] == ["DATA", "RSET"]
    assert recorder.script.messages == []


async def test_lmtp_pipelines_and_reads_one_reply_per_recipient(recorder: Remote) -> None:
    recorder.script.lmtp = True
    hard = "550 5.1.1 <c@x.test>: User unknown"
    recorder.script.rcpt_replies["c@x.test"] = hard
    con = connector(lmtp=True)
    try:
        got = await deliver(
            con, job(f"inet:127.0.0.1:{recorder.port}", ["b@x.test", "c@x.test", "d@x.test"])
        )
    finally:
        await con.cache.close()
    assert got == [SENT, Outcome("bounced", "5.1.1", said(hard, "RCPT TO command")), SENT]
    assert recorder.script.commands[0] == "LHLO mail.postbus.test"
    assert recorder.script.envelope()[0] == (
        b"MAIL FROM:<alice@postbus.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\n"
        b"RCPT TO:<d@x.test>\r\nDATA\r\n"
    )


# -- Postfix's smtp-sink (PIPELINING offered; -p hides it) -----------------------------


@pytest.mark.parametrize("switches", [[], ["-p"]], ids=["pipelining", "no-pipelining"])
async def test_smtp_sink_with_and_without_pipelining(switches: list[str]) -> None:
    with SmtpSink(need("smtp-sink"), *switches) as sink:
        con = connector()
        try:
            nexthop = f"[127.0.0.1]:{sink.port}"
            for n in range(3):
                got = await deliver(con, job(nexthop, [f"a{n}@x.test", f"b{n}@x.test"]))
                assert [o.status for o in got] == ["sent", "sent"], got
                assert all(o.reason.startswith("250 2.0.0") for o in got), got
            [(_, chat)] = con.cache.idle[nexthop]
            assert ("pipelining" in chat.features) == (switches == [])
            assert chat.reuse_count == 2
        finally:
            await con.cache.close()


async def test_smtp_sink_rejected_mail_in_a_pipeline_keeps_the_session() -> None:
    with SmtpSink(need("smtp-sink"), "-f", "mail") as sink:
        con = connector()
        try:
            nexthop = f"[127.0.0.1]:{sink.port}"
            for _ in range(2):
                got = await deliver(con, job(nexthop, ["a@x.test", "b@x.test"]))
                assert [o.status for o in got] == ["bounced", "bounced"], got
                assert all(o.reason.endswith("(in reply to MAIL FROM command)") for o in got)
            [(_, chat)] = con.cache.idle[nexthop]
            assert chat.reuse_count == 1 and not chat.broken
        finally:
            await con.cache.close()
