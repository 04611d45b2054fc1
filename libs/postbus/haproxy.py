"""The haproxy PROXY protocol, v1 text and v2 binary (≈ Postfix's global/haproxy_srvr.c).

A load balancer that hides the client address (Kubernetes, haproxy, AWS
NLB) sends one header before the SMTP conversation; smtpd with
``smtpd_upstream_proxy_protocol = haproxy`` reads it and takes the client
address and port from it. :func:`parse` decides as Postfix 3.7 does, with
its error texts (they go into ``warning: haproxy read: <error>: <bytes>``):

- v1: ``PROXY TCP4|TCP6 <client> <server> <cport> <sport>\\r\\n``; tokens
  are split at spaces and CRs; ``UNKNOWN`` is refused (it would sidestep
  address-based access control); addresses must be written as Postfix's
  valid_ipv4_hostaddr()/valid_ipv6_hostaddr() accept them and come back in
  the C library's canonical form; ports are decimal without a leading zero.
- v2: the 12-byte signature, version 2, command PROXY with TCP over IPv4 or
  IPv6 (anything else is an "unsupported network protocol"), or command
  LOCAL (a health check of the proxy itself: the connection's own
  endpoints are used). TLVs are skipped.
- An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) becomes IPv4 when IPv4 is
  enabled (inet_protocols); a family that is not enabled is refused.

Input is bounded as Postfix's one peek of 536 bytes is: a v1 line ends
within :data:`V1_MAX` bytes (the protocol's 107), a v2 header (16 bytes and
its length field) within :data:`HEADER_MAX`. :func:`parse` returns None
while a header is still incomplete, so a caller reads more; with
``final`` it judges what it has.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = ["HEADER_MAX", "V1_MAX", "V2_SIGNATURE", "Header", "ProxyError", "encode_v1",
           "encode_v2", "escape", "parse", "wanted"]

V1_MAX = 107  # "PROXY TCP6 " + 2 * 39 + 2 * 5 + 4 separators + CRLF
HEADER_MAX = 536  # Postfix's HAPROXY_HEADER_MAX_LEN: the default IPv4 TCP MSS
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEADER_LEN = 16
_V1_START = b"PROXY "
_ADDR_MAX = 46  # INET6_ADDRSTRLEN: MAI_HOSTADDR_STR
_CMD_LOCAL, _CMD_PROXY = 0x00, 0x01
_TCP4, _TCP6 = 0x11, 0x21


class ProxyError(ValueError):
    """A header Postfix would refuse; the text is Postfix's reason."""


@dataclass(frozen=True)
class Header:
    """What a valid header says; ``local``: use the connection's own endpoints."""

    length: int  # bytes of input the header took
    local: bool = False
    client_addr: str = ""
    client_port: int = 0
    server_addr: str = ""
    server_port: int = 0


def parse(data: bytes, *, ipv4: bool = True, ipv6: bool = True,
          final: bool = False) -> Header | None:
    """The header at the start of ``data``; None: incomplete (read more, unless ``final``).

    Raises :class:`ProxyError` with Postfix's reason."""
    if data.startswith(_V1_START):
        return _parse_v1(data, ipv4, ipv6, final)
    prefix = _V1_START.startswith(data[:6]) or V2_SIGNATURE.startswith(data[:12])
    if prefix and not final and len(data) < _V2_HEADER_LEN:
        return None  # "PROX" or half a signature: wait for the rest
    return _parse_v2(data, ipv4, ipv6, final)


def wanted(data: bytes) -> int:
    """How many more bytes may be read without reading past a header that starts with
    ``data`` (0: no more). For a reader that must leave what follows in the socket (a
    TLS ClientHello): a valid header has 16 bytes at least, a v2 header says its
    length, and a v1 line still needs a byte per token and separator before its LF."""
    if len(data) < _V2_HEADER_LEN:
        return _V2_HEADER_LEN - len(data)
    if data.startswith(V2_SIGNATURE):
        return max(_V2_HEADER_LEN + struct.unpack_from("!H", data, 14)[0] - len(data), 0)
    if not data.startswith(_V1_START) or b"\n" in data or len(data) >= V1_MAX:
        return 0
    words = data.replace(b"\r", b" ").split()
    missing = max(6 - len(words), 0)
    if data[-1:] in (b" ", b"\r"):
        return max(2 * missing, 1)
    return min(2 * missing + 1, V1_MAX - len(data))


def _parse_v1(data: bytes, ipv4: bool, ipv6: bool, final: bool) -> Header | None:
    end = data.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(data) < V1_MAX and not final:
            return None
        raise ProxyError("missing protocol header terminator")
    line = data[:end]
    if b"\0" in line:  # Postfix reads a C string: it ends at the NUL, before the LF
        raise ProxyError("missing protocol header terminator")
    words = line.decode("latin-1").replace("\r", " ").split()
    words += [""] * (6 - len(words))  # a missing token fails like a bad one
    if words[0] != "PROXY":
        raise ProxyError("bad or missing protocol header")
    proto = words[1].upper()
    if not ((proto == "TCP4" and ipv4) or (proto == "TCP6" and ipv6)):
        raise ProxyError("bad or missing protocol type")
    family = socket.AF_INET if proto == "TCP4" else socket.AF_INET6
    client = _text_addr(words[2], family, ipv4)
    if client is None:
        raise ProxyError("bad or missing client address")
    server = _text_addr(words[3], family, ipv4)
    if server is None:
        raise ProxyError("bad or missing server address")
    if not _valid_port(words[4]):
        raise ProxyError("bad or missing client port")
    if not _valid_port(words[5]):
        raise ProxyError("bad or missing server port")
    return Header(end + 1, False, client, int(words[4]), server, int(words[5]))


def _parse_v2(data: bytes, ipv4: bool, ipv6: bool, final: bool) -> Header | None:
    if len(data) < _V2_HEADER_LEN:
        raise ProxyError("short protocol header")
    if data[:12] != V2_SIGNATURE:
        raise ProxyError("unrecognized protocol header")
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd & 0xF0 != 0x20:
        raise ProxyError("unrecognized protocol version")
    total = _V2_HEADER_LEN + length
    if len(data) < total:
        if total <= HEADER_MAX and not final:
            return None
        raise ProxyError("short version 2 protocol header")
    cmd = ver_cmd & 0x0F
    if cmd == _CMD_LOCAL:
        return Header(total, True)
    if cmd != _CMD_PROXY:
        raise ProxyError("bad command in proxy header")
    if fam == _TCP4:
        if not ipv4:
            raise ProxyError("Postfix IPv4 support is disabled")
        if length < 12:
            raise ProxyError("short address field")
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", data, 16)
        return Header(total, False, socket.inet_ntop(socket.AF_INET, src), sport,
                      socket.inet_ntop(socket.AF_INET, dst), dport)
    if fam == _TCP6:
        if not ipv6:
            raise ProxyError("Postfix IPv6 support is disabled")
        if length < 36:
            raise ProxyError("short address field")
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", data, 16)
        return Header(total, False, _unmap(socket.inet_ntop(socket.AF_INET6, src), ipv4), sport,
                      _unmap(socket.inet_ntop(socket.AF_INET6, dst), ipv4), dport)
    raise ProxyError("unsupported network protocol")


def _text_addr(text: str, family: int, ipv4: bool) -> str | None:
    """A v1 address in canonical form, or None (≈ haproxy_srvr_parse_addr())."""
    if not text or len(text) >= _ADDR_MAX:
        return None
    valid = _valid_ipv4(text) if family == socket.AF_INET else _valid_ipv6(text)
    if not valid:
        return None
    try:  # the C library's own reading and writing of it, as Postfix does
        info = socket.getaddrinfo(text, None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None
    return _unmap(str(info[0][4][0]), ipv4)


def _unmap(addr: str, ipv4: bool) -> str:
    if ipv4 and addr[:7].lower() == "::ffff:" and "." in addr:
        return addr[7:]
    return addr


def _valid_port(text: str) -> bool:
    """valid_hostport(): decimal, no leading zero, at most 65535."""
    if not text or not text.isascii() or not text.isdigit():
        return False
    return not (text[0] == "0" and len(text) > 1) and len(text) <= 5 and int(text) <= 65535


def _valid_ipv4(addr: str) -> bool:
    """valid_ipv4_hostaddr(): four decimal bytes; 0.0.0.0, but not 0.1.2.3."""
    parts = addr.split(".")
    if len(parts) != 4 or not all(p and p.isascii() and p.isdigit() for p in parts):
        return False
    if any(int(p) > 255 for p in parts):
        return False
    return not (int(parts[0]) == 0 and any(c not in "0." for c in addr))


def _valid_ipv6(addr: str) -> bool:
    """valid_ipv6_hostaddr(): eight hex fields of up to 4 digits, one ``::``, or an
    IPv4 tail after two to six fields."""
    null_field = field = length = 0
    pos = 0
    hexdigits = "0123456789abcdefABCDEF"
    while True:
        ch = addr[pos] if pos < len(addr) else ""
        if ch == "":
            if field < 2:
                return False
            return not (length == 0 and null_field != field - 1)
        if ch == ".":
            if field < 2 or field > 6:
                return False
            return _valid_ipv4(addr[pos - length:])
        if ch == ":":
            if field == 0 and length == 0 and pos + 1 < len(addr) and addr[pos + 1].isalnum():
                return False
            field += 1
            if field > 7:
                return False
            pos += 1
            length = 0
            if pos < len(addr) and addr[pos] == ":":
                if null_field > 0:
                    return False
                null_field = field
            continue
        start = pos
        while pos < len(addr) and addr[pos] in hexdigits:
            pos += 1
        length = pos - start
        if length > 4 or length == 0:
            return False


def escape(data: bytes) -> str:
    """Bytes as Postfix's escape() writes them into a log line (C escapes, \\ooo)."""
    names = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
    out = []
    for byte in data:
        if 32 <= byte < 127:
            out.append("\\\\" if byte == 92 else chr(byte))
        else:
            out.append(names.get(byte, f"\\{byte:03o}"))
    return "".join(out)


def encode_v1(client: tuple[str, int], server: tuple[str, int]) -> bytes:
    """A v1 header (for a client of ours, and for tests)."""
    proto = "TCP6" if ":" in client[0] else "TCP4"
    return f"PROXY {proto} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()


def encode_v2(client: tuple[str, int] | None, server: tuple[str, int] | None = None,
              tlvs: bytes = b"") -> bytes:
    """A v2 header: PROXY for the given endpoints, LOCAL when ``client`` is None."""
    if client is None or server is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _CMD_LOCAL, 0, len(tlvs)) + tlvs
    family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
    body = (socket.inet_pton(family, client[0]) + socket.inet_pton(family, server[0])
            + struct.pack("!HH", client[1], server[1]) + tlvs)
    fam = _TCP6 if family == socket.AF_INET6 else _TCP4
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _CMD_PROXY, fam, len(body)) + body
