"""smtpd_proxy_filter: the before-queue content filter (≈ smtpd_proxy.c).

With smtpd_proxy_filter set, smtpd queues nothing itself: each mail
transaction is relayed over SMTP to the filter, whose own downstream (a
second smtpd listener, usually with ``-o smtpd_proxy_filter=``) queues it,
and the filter's reply is the client's reply. The filter answers before
our ``250``, so it can reject content in the SMTP session.

As Postfix: the connection is opened when the first recipient has passed
the restrictions (greeting, ``EHLO $smtpd_proxy_ehlo``, the client's MAIL
FROM command as received), each accepted RCPT TO is relayed and the
filter's refusal is the client's reply; DATA is relayed before our 354;
the client is told with XFORWARD when the filter offers it; the content
goes with our own ``Received:`` header (no queue ID: nothing is
queued here), and the filter's end-of-data reply goes back to the client
and is logged as ``proxy-accept: END-OF-MESSAGE: ...`` or
``proxy-reject: ...``. smtpd_end_of_data_restrictions run before the final
dot. With ``smtpd_proxy_options = speed_adjust`` the whole message is
received first and the transaction is replayed to the filter at the end of
data (the filter is busy only for as long as it needs). A filter that
cannot be reached, that breaks the protocol or that does not answer
within smtpd_proxy_timeout gets Postfix's warning, and the client
``451 4.3.0 Error: queue file write error``: never a lost message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingress_smtpd.xforward import CLIENT_ATTRS
from postbus import metrics
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.smtp import replies as r
from postbus.smtp.address import quote_local
from postbus.smtp.dotstuff import crlf, stuff

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")

SPEED_ADJUST = "speed_adjust"
PROXY_ERROR = r.QUEUE_WRITE_ERROR  # cleanup_stat_detail(CLEANUP_STAT_PROXY)


@dataclass(frozen=True)
class ProxySettings:
    """smtpd_proxy_filter and its companions, read once."""

    service: str  # as configured: the name the warnings give; "" is off
    timeout: float
    ehlo: str
    speed_adjust: bool
    line_limit: int

    @classmethod
    def from_config(cls, cfg: Config) -> ProxySettings:
        options = [w.lower() for w in cfg.list("smtpd_proxy_options")]
        for word in options:
            if word != SPEED_ADJUST:
                raise ConfigError(f'invalid smtpd_proxy_options value "{word}"',
                                  parameter="smtpd_proxy_options")
        return cls(service=cfg.get("smtpd_proxy_filter").strip(),
                   timeout=cfg.time("smtpd_proxy_timeout"), ehlo=cfg.get("smtpd_proxy_ehlo"),
                   speed_adjust=SPEED_ADJUST in options,
                   line_limit=max(cfg.size("line_length_limit"), 512))


class ProxyDown(Exception):
    """The filter is gone or broke the protocol (the warning is logged)."""


class Proxy:
    """One transaction's connection to the filter."""

    def __init__(self, settings: ProxySettings, mail_line: str) -> None:
        self.s = settings
        self.mail_line = mail_line  # the client's MAIL FROM command, as received
        self.replay: list[str] = []  # speed_adjust: the RCPT commands to send at the end
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.data_sent = False
        self.broken = False  # gone or out of protocol: every later command fails
        self.last = ""  # the filter's last reply

    async def _connect(self) -> None:
        service = self.s.service
        try:
            if service.lower().startswith("unix:"):
                connect = asyncio.open_unix_connection(service[5:])
            else:
                endpoint = service[5:] if service.lower().startswith("inet:") else service
                host, _, port = endpoint.rpartition(":")
                connect = asyncio.open_connection(host.strip("[]") or "localhost", int(port))
            self.reader, self.writer = await asyncio.wait_for(connect, self.s.timeout)
        except (OSError, ValueError, TimeoutError) as exc:
            errno = getattr(exc, "errno", None)
            why = "Connection timed out" if isinstance(exc, TimeoutError) else \
                os.strerror(errno) if errno else str(exc)
            _failed("connect", "connect to proxy filter %s: %s", service, why)
            raise ProxyDown from None

    async def cmd(self, line: str, expect: str) -> str | None:
        """Send ``line`` (none: read the greeting) and read the reply; None when it
        starts with ``expect`` (or ``expect`` is ""), else the client's reply."""
        if self.reader is None or self.writer is None or self.broken:
            raise ProxyDown
        try:
            async with asyncio.timeout(self.s.timeout):
                if line:
                    self.writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
                    await self.writer.drain()
                self.last = await self._reply()
        except TimeoutError:
            _failed("timeout", "timeout talking to proxy %s", self.s.service)
            raise ProxyDown from None
        except (OSError, EOFError):
            _failed("lost", "lost connection with proxy %s", self.s.service)
            raise ProxyDown from None
        if not expect or self.last[:1] == expect:
            return None
        log.warning('proxy %s rejected "%s": "%s"', self.s.service,
                    line or "connection request", self.last)
        if self.last[:1] in "23":  # an unexpected 2xx or 3xx is never passed on
            raise ProxyDown
        return self.last

    async def _reply(self) -> str:
        """A whole (multi-line) reply, non-printable characters as ``?``."""
        assert self.reader is not None
        lines: list[str] = []
        size = 0
        while True:
            raw = await self.reader.readline()
            if not raw:
                raise EOFError
            text = "".join(c if c.isprintable() else "?" for c in
                           raw.rstrip(b"\r\n").decode("utf-8", "replace"))
            if size < self.s.line_limit:
                lines.append(text)
                size += len(text) + 2
            if len(text) - len(text.lstrip("0123456789")) == 3:
                if text[3:4] == "-":
                    continue
                if text[3:4] in ("", " "):
                    return "\r\n".join(lines)
            _failed("garbage", "received garbage from proxy %s: %.100s", self.s.service, text)

    async def open(self, xforward: list[tuple[str, str]]) -> str | None:
        """Connect, greeting, EHLO, XFORWARD when the filter offers it, the client's
        MAIL FROM; None or the client's reply."""
        await self._connect()
        if await self.cmd("", "2") is not None or \
                await self.cmd(f"EHLO {self.s.ehlo}", "2") is not None:
            raise ProxyDown  # the filter must take us: a made-up reply, not its own
        offered = _xforward_offered(self.last)
        line = ""
        for name, value in xforward:
            if name not in offered:
                continue
            item = f" {name}={_xtext(value)}"
            if line and len(line) + len(item) > XFORWARD_LIMIT:
                if await self.cmd("XFORWARD" + line, "2") is not None:
                    raise ProxyDown
                line = ""
            line += item
        if line and await self.cmd("XFORWARD" + line, "2") is not None:
            raise ProxyDown
        return await self.cmd(self.mail_line, "2")

    async def content(self, content: bytes) -> str:
        """The message (CRLF, unstuffed) and the final dot: the filter's reply."""
        assert self.writer is not None
        try:
            async with asyncio.timeout(self.s.timeout):
                self.writer.write(stuff(crlf(content)))  # the final "." included
                await self.writer.drain()
        except TimeoutError:
            _failed("timeout", "timeout talking to proxy %s", self.s.service)
            raise ProxyDown from None
        except OSError:
            _failed("lost", "lost connection with proxy %s", self.s.service)
            raise ProxyDown from None
        await self.cmd("", "")
        return self.last

    def close(self) -> None:
        """QUIT without waiting for the answer, and close (≈ smtpd_proxy_close())."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.write(b"QUIT\r\n")
                self.writer.close()
        self.reader = self.writer = None


XFORWARD_LIMIT = 512 - len("250 XFORWARD\r\n")  # PAYLOAD_LIMIT
UNAVAILABLE = "[UNAVAILABLE]"


def _failed(kind: str, warning: str, *args: object) -> None:
    """A filter that cannot be talked to: Postfix's warning, and a count per kind."""
    log.warning(warning, *args)
    metrics.proxy_filter_errors.labels(kind).inc()


def _xforward_offered(ehlo: str) -> frozenset[str]:
    """The XFORWARD attributes an EHLO reply names."""
    for line in ehlo.split("\r\n"):
        words = line[4:].upper().split()
        if words[:1] == ["XFORWARD"]:
            return frozenset(words[1:])
    return frozenset()


def _xtext(value: str) -> str:
    """RFC 3461 xtext (≈ xtext_quote())."""
    return "".join(f"+{b:02X}" if b < 33 or b > 126 or b in b"+=" else chr(b)
                   for b in value.encode("utf-8", "surrogateescape"))


def xforward(session: Session) -> list[tuple[str, str]]:
    """The client as XFORWARD tells it, in Postfix's order (IDENT: no queue ID here);
    what our own client forwarded to us, when it did (≈ FORWARD_NAME() and friends)."""
    fwd = session.xforward
    peer = getattr(session.conn, "peer", None)
    name, addr, helo = session.client_name, session.client_addr, session.helo
    port, proto = str(peer[1]) if peer and peer[1] else "", session.protocol
    ident = ""
    if fwd is not None:
        if fwd.received & CLIENT_ATTRS:
            name, addr, port, helo = fwd.name, fwd.addr, fwd.port, fwd.helo or ""
            proto = fwd.protocol
        ident = fwd.ident or ""
    known = [("NAME", name, name != "unknown"),
             ("ADDR", f"IPv6:{addr}" if ":" in addr else addr, addr != "unknown"),
             ("PORT", port, bool(port) and port != "unknown"),
             ("HELO", helo, bool(helo)), ("IDENT", ident, bool(ident)),
             ("PROTO", proto, proto != "unknown"),
             ("SOURCE", "LOCAL" if session.header_context == "local" else "REMOTE", True)]
    return [(name, value if ok else UNAVAILABLE) for name, value, ok in known]


def drop(session: Session) -> None:
    """End the transaction's filter connection, if any."""
    if session.proxy is not None:
        session.proxy.close()
        session.proxy = None


# -- the session's side ------------------------------------------------------------------


async def proxy_rcpt(session: Session) -> str | None:
    """A recipient that passed the restrictions: open the filter at the first (with
    the MAIL FROM command), relay the RCPT TO command; None or the client's reply."""
    settings = session.server.proxy_filter
    if not settings.service:
        return None
    proxy = session.proxy
    if proxy is None:
        proxy = Proxy(settings, session.mail_line)
        if not settings.speed_adjust:
            try:
                reply = await proxy.open(xforward(session))
            except ProxyDown:
                reply = PROXY_ERROR
            if reply is not None:
                proxy.close()
                return reply
        session.proxy = proxy
    if settings.speed_adjust:
        proxy.replay.append(session.line)
        return None
    return await _cmd(proxy, session.line, "2")


async def proxy_data(session: Session) -> str | None:
    """DATA (or the first BDAT) relayed before our own go-ahead."""
    proxy = session.proxy
    if proxy is None or proxy.s.speed_adjust or proxy.data_sent:
        return None
    proxy.data_sent = True
    return await _cmd(proxy, "DATA", "3")


async def _cmd(proxy: Proxy, line: str, expect: str) -> str | None:
    try:
        return await proxy.cmd(line, expect)
    except ProxyDown:
        proxy.broken = True
        return PROXY_ERROR


async def proxy_message(session: Session, top: bytes, content: bytes) -> bool:
    """End of data with a filter: end-of-data restrictions, then our Received: header
    (``top``) and the content to the filter; its reply is the client's."""
    proxy = session.proxy
    assert proxy is not None
    reject = await session.server.policy.check_eod(session.check_state())
    if reject is not None:
        await session.reply(reject)
        return False
    reply = await _replay(session, proxy)
    if reply is None:
        reply = await proxy_data(session)
    if reply is None:
        started = time.perf_counter()
        try:
            reply = await proxy.content(top + content)
        except ProxyDown:
            proxy.broken = True
            reply = PROXY_ERROR
        metrics.proxy_filter_seconds.observe(time.perf_counter() - started)
    ok = reply[:1] == "2"
    metrics.proxy_filter_results.labels(
        "accept" if ok else "error" if reply == PROXY_ERROR else
        "reject" if reply[:1] == "5" else "tempfail").inc()
    log.info("proxy-%s: %s: %s;%s", "accept" if ok else "reject", session.where, reply,
             _whatsup(session))
    if ok:
        session.server.accepted.inc()
        session.errors = session.junk = 0
        session.conn.write(reply)
    else:
        await session.reply(reply)
    return ok


async def _replay(session: Session, proxy: Proxy) -> str | None:
    """speed_adjust: the transaction so far, now that the message is here."""
    if not proxy.s.speed_adjust:
        return None
    try:
        reply = await proxy.open(xforward(session))
        for line in proxy.replay:
            reply = reply or await proxy.cmd(line, "2")
        reply = reply or await proxy.cmd("DATA", "3")
    except ProxyDown:
        proxy.broken = True
        return PROXY_ERROR
    proxy.data_sent = True
    return reply


def _whatsup(session: Session) -> str:
    """smtpd_whatsup(): `` from=<..> to=<first recipient> proto=.. helo=<..>``."""
    out = f" from=<{quote_local(session.sender or '')}>"
    if session.recipients:
        out += f" to=<{quote_local(session.recipients[0].address)}>"
    out += f" proto={session.protocol}"
    if session.helo:
        out += f" helo=<{session.helo}>"
    if session.auth.username is not None:
        out += f" sasl_username=<{session.auth.username}>"
    return out
