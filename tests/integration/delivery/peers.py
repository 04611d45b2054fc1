"""Remote peers for delivery tests: aiosmtpd (SMTP/LMTP), smtp-sink, and a tiny DNS server."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from postbus.servers import free_port, wait_port
from tests import postfix_instance


@dataclass
class Handler:
    """Records what arrives; scripted replies for RCPT (by address) and DATA."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 Ok: queued as REMOTE1"
    data_stall: float = 0.0
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)
    tls: list[bool] = field(default_factory=list)  # per message: was the session encrypted
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_stall:
            await asyncio.sleep(self.data_stall)
        with self.lock:
            self.sessions.add(id(session))
            self.tls.append(session.ssl is not None)
            self.messages.append(
                (str(envelope.mail_from), list(envelope.rcpt_tos), envelope.original_content or b"")
            )
        return self.data_reply


class LmtpController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


class Peer:
    """An aiosmtpd server on 127.0.0.1 (SMTP, or LMTP with ``lmtp=True``)."""

    def __init__(
        self,
        handler: Handler | None = None,
        lmtp: bool = False,
        tls_context: ssl.SSLContext | None = None,
        **smtp_params: Any,
    ) -> None:
        """``smtp_params``: more of aiosmtpd's SMTP arguments (``authenticator`` ...)."""
        self.handler = handler or Handler()
        self.port = free_port()
        cls = LmtpController if lmtp else Controller
        self.controller = cls(
            self.handler, hostname="127.0.0.1", port=self.port, decode_data=False,
            tls_context=tls_context, **smtp_params,
        )

    def __enter__(self) -> Peer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def wait_message(peer: Peer, timeout: float = 60.0) -> bytes:
    """The content of the first message the peer received (waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with peer.handler.lock:
            if peer.handler.messages:
                return peer.handler.messages[0][2]
        time.sleep(0.05)
    raise AssertionError("the peer received nothing")


def wait_log(path: Path, pattern: str, timeout: float = 30.0) -> str:
    """The first match of ``pattern`` in a log file (waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (found := re.search(pattern, path.read_text(), re.M)):
            return found.group(0)
        time.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r}")


def postfix_relays(handler: Handler, message: bytes, mail_options: Sequence[str] = (),
                   log_pattern: str = "") -> tuple[list[str], str]:
    """A private Postfix relays ``message`` to an aiosmtpd peer with ``handler``: the
    lines that arrive after Postfix's Received: header, and the first log line matching
    ``log_pattern`` (when given)."""
    with Peer(handler) as peer:
        port = free_port()
        instance = postfix_instance.PostfixInstance(port, {
            "myhostname": "mx.postbus.test", "relayhost": f"[127.0.0.1]:{peer.port}",
        })
        instance.start()
        try:
            wait_port("127.0.0.1", port, 20)
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.example")
                client.sendmail("alice@client.test", ["bob@remote.test"], message,
                                mail_options=list(mail_options))
            content = wait_message(peer)
            line = wait_log(instance.maillog, log_pattern) if log_pattern else ""
        finally:
            instance.stop()
    lines = content.decode("latin-1").split("\r\n")
    assert lines[0].startswith("Received: "), lines[:3]
    rest = 1
    while lines[rest][:1] in (" ", "\t"):
        rest += 1
    return lines[rest:], line


class SmtpSink:
    """Postfix's smtp-sink on a free port; ``args`` are its failure switches."""

    def __init__(self, binary: str, *args: str) -> None:
        self.port = free_port()
        self.argv = [binary, "-u", "root", *args, f"127.0.0.1:{self.port}", "50"]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, stdout=quiet, stderr=quiet)
        wait_port("127.0.0.1", self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)


class DnsServer(asyncio.DatagramProtocol):
    """Answers from a dict {(name, type): [rdata, ...]}; unknown names get NXDOMAIN.

    ``servfail`` names get SERVFAIL (a temporary error). Answers for names in ``secure``
    (or every name, with ``"*"``) carry the AD bit when the query sets DO, as a validating
    resolver's do for a signed zone; TLSA records are given as ``"3 1 1 <hex>"``.
    """

    def __init__(self, zone: dict[tuple[str, str], list[str]], servfail: tuple[str, ...] = (),
                 secure: tuple[str, ...] = ()):
        self.zone = {(n.lower().rstrip("."), t): v for (n, t), v in zone.items()}
        self.names = {n for n, _ in self.zone}
        self.servfail = servfail
        self.secure = set(secure)
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().lower().rstrip(".")
        rtype = dns.rdatatype.to_text(question.rdtype)
        if query.ednsflags & dns.flags.DO and (name in self.secure or "*" in self.secure):
            reply.flags |= dns.flags.AD
        if name in self.servfail:
            reply.set_rcode(dns.rcode.SERVFAIL)
            reply.flags &= ~dns.flags.AD
        elif name not in self.names:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rtype) in self.zone:
            reply.answer.append(
                dns.rrset.from_text(name + ".", 60, "IN", rtype, *self.zone[(name, rtype)])
            )
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


def server_tls(directory: Path, openssl: str) -> ssl.SSLContext:
    """A self-signed certificate made with the openssl tool, as a server context."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=mx.remote.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
