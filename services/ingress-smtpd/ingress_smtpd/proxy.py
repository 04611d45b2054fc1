"""The client's endpoints from an upstream proxy (≈ smtpd_peer.c's smtpd_peer_from_proxy()
and smtpd_haproxy.c).

With ``smtpd_upstream_proxy_protocol = haproxy`` the first bytes of every
connection must be a PROXY header (:mod:`postbus.haproxy`), complete
within ``smtpd_upstream_proxy_timeout``. Its client address and port then
stand for the connection's own everywhere: mynetworks, restrictions,
limits, the Received: header, the log. Without a valid header Postfix
cannot keep an audit trail or enforce access control, so it logs why
(``warning: haproxy read: ...``) and the session gets only ``421 4.3.0
<host> Server local error``; we do the same.

Postfix peeks at the socket once; we read until the header is complete
(a header split over two packets works): whatever follows is the client's
first SMTP command and stays in the input buffer. With TLS on connect
(smtpd_tls_wrappermode) what follows is the ClientHello, which the TLS
layer must read from the socket itself: there :class:`HeaderOnly` stands in
as the connection's protocol until the header is in, and reads no byte past
it (:func:`postbus.haproxy.wanted`).
"""

from __future__ import annotations

import asyncio
import logging

from ingress_smtpd.connection import Connection
from postbus import haproxy
from postbus.config.conv import ConfigError
from postbus.config.loader import Config

log = logging.getLogger("postbus.smtpd")

PROTOCOLS = ("", "haproxy")  # none, and the one Postfix 3.7 has


def proxy_protocol(cfg: Config) -> str:
    """smtpd_upstream_proxy_protocol, refused at start when it is not one Postfix has."""
    value = cfg.get("smtpd_upstream_proxy_protocol").strip()
    if value not in PROTOCOLS:
        raise ConfigError(f"unsupported smtpd_upstream_proxy_protocol value: {value}",
                          parameter="smtpd_upstream_proxy_protocol")
    return value


class HeaderOnly(asyncio.BufferedProtocol):
    """A connection's protocol while its PROXY header is read before TLS on connect:
    each read takes at most the bytes the header may still need."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.chunk = bytearray(haproxy.HEADER_MAX)

    @classmethod
    def install(cls, conn: Connection) -> None:
        """Called from the connection's connection_made, before anything is read."""
        if conn.transport is not None:
            conn.transport.set_protocol(cls(conn))

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.chunk)[:max(haproxy.wanted(bytes(self.conn.buf)), 1)]

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.data_received(bytes(self.chunk[:nbytes]))
        if not haproxy.wanted(bytes(self.conn.buf)) and self.conn.transport is not None:
            self.conn.transport.pause_reading()  # the rest is TLS's

    def eof_received(self) -> bool | None:
        return self.conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()


def _restore(conn: Connection) -> None:
    transport = conn.transport
    if transport is not None and isinstance(transport.get_protocol(), HeaderOnly):
        transport.pause_reading()
        transport.set_protocol(conn)


def families(cfg: Config) -> tuple[bool, bool]:
    """(IPv4, IPv6) enabled by inet_protocols, as the header's families are checked."""
    words = {w.lower() for w in cfg.list("inet_protocols")}
    if "all" in words:
        return True, True
    return "ipv4" in words, "ipv6" in words


async def read_endpoints(
    conn: Connection, timeout: float, ipv4: bool, ipv6: bool
) -> tuple[str, int] | None:
    """The client (address, port) the header names, the connection's own for a v2
    LOCAL header, or None (logged as Postfix logs it) when the session must end."""
    try:
        return await _read_endpoints(conn, timeout, ipv4, ipv6)
    finally:
        _restore(conn)


async def _read_endpoints(
    conn: Connection, timeout: float, ipv4: bool, ipv6: bool
) -> tuple[str, int] | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    final = False
    while True:
        final = final or conn.eof
        if conn.buf:
            data = bytes(conn.buf[:haproxy.HEADER_MAX])
            try:
                header = haproxy.parse(data, ipv4=ipv4, ipv6=ipv6, final=final)
            except haproxy.ProxyError as exc:
                log.warning("haproxy read: %s: %s", exc, haproxy.escape(data))
                return None
            if header is not None:
                del conn.buf[:header.length]
                return conn.peer if header.local else (header.client_addr, header.client_port)
        elif final:
            log.warning("haproxy read: EOF")
            return None
        try:
            final = not await conn.wait_input(deadline - loop.time())
        except TimeoutError:
            if not conn.buf:
                log.warning("haproxy read: timeout error")
                return None
            final = True  # judge what came: "missing protocol header terminator", ...
