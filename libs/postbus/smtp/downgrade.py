"""8BITMIME to 7BIT for a server without 8BITMIME (≈ mime_state.c with MIME_OPT_DOWNGRADE).

Postfix's rule, to the letter: only a MIME entity whose
Content-Transfer-Encoding says ``8bit`` or ``binary`` is converted. Its
encoding header goes, and a new one ends its header block:
``quoted-printable`` for a leaf, whose body lines are then encoded,
``7bit`` for a multipart or message/rfc822 container. Everything else
passes as it came (headers included; 8-bit octets in an entity that does
not declare 8bit are not Postfix's business either). The quoted-printable
is mime_state_downgrade()'s: every octet outside 32..126 but TAB, and
``=``, as ``=XX``; a soft line break once a line has passed 72 octets; a
trailing blank encoded.

The walk follows Postfix's MIME state machine: ``multipart/*`` pushes its
boundary (a digest's parts default to message/rfc822), a boundary line of
any open level starts a part (or, with ``--``, closes that level), and a
``message/rfc822`` body starts with the attached message's headers.
``mime_nesting_limit`` bounds the depth as it does for the checks.
"""

from __future__ import annotations

import re

__all__ = ["downgrade"]

_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_TOKEN = re.compile(rb'[ \t\r\n]*([^\s()<>@,;:\\"/\[\]?=]+)')
_BOUNDARY = re.compile(
    rb';[ \t\r\n]*boundary[ \t\r\n]*=[ \t\r\n]*(?:"((?:[^"\\]|\\.)*)"|([^\s()<>@,;:\\"/\[\]?=]+))',
    re.I)
_DOMAINS = {b"7bit": "7bit", b"quoted-printable": "7bit", b"base64": "7bit",
            b"8bit": "8bit", b"binary": "binary"}
_HEX = b"0123456789ABCDEF"


def _qp(line: bytes) -> list[bytes]:
    """One body line (no CRLF) as quoted-printable lines, soft breaks included."""
    out: list[bytes] = []
    buf = bytearray()
    for ch in line:
        if len(buf) > 72:
            out.append(bytes(buf) + b"=")
            buf.clear()
        if (ch < 32 and ch != 9) or ch == 61 or ch > 126:
            buf += bytes((61, _HEX[ch >> 4], _HEX[ch & 15]))
        else:
            buf.append(ch)
    if buf and buf[-1] in (32, 9):
        ch = buf.pop()
        buf += bytes((61, _HEX[ch >> 4], _HEX[ch & 15]))
    out.append(bytes(buf))
    return out


class _Entity:
    """The header block being read: its type and its encoding domain."""

    def __init__(self, ctype: bytes, stype: bytes) -> None:
        self.ctype, self.stype = ctype, stype
        self.domain = "7bit"
        self.boundary: bytes | None = None
        self.raw: list[bytes] = []  # every header line, in order
        self.kept: list[bytes] = []  # the same without Content-Transfer-Encoding

    def header(self, lines: list[bytes]) -> None:
        """One logical header (its physical lines)."""
        self.raw += lines
        match = _NAME.match(lines[0])
        name = match.group(1).lower() if match else b""
        value = b"\r\n".join(lines)[match.end():] if match else b""
        if name == b"content-transfer-encoding":
            token = _TOKEN.match(value)
            if token and token.group(1).lower() in _DOMAINS:
                self.domain = _DOMAINS[token.group(1).lower()]
            return
        self.kept += lines
        if name == b"content-type":
            words = _TOKEN.match(value)
            if words:
                rest = value[words.end():].lstrip(b" \t\r\n")
                sub = _TOKEN.match(rest[1:]) if rest[:1] == b"/" else None
                self.ctype = words.group(1).lower()
                self.stype = sub.group(1).lower() if sub else b""
            bound = _BOUNDARY.search(value)
            if bound and self.ctype == b"multipart":
                self.boundary = bound.group(1) if bound.group(1) is not None else bound.group(2)

    def end(self) -> list[bytes]:
        """The header block as sent."""
        if self.domain == "7bit":
            return self.raw
        container = self.ctype == b"multipart" or (
            self.ctype == b"message" and self.stype != b"global")
        cte = b"7bit" if container else b"quoted-printable"
        return [*self.kept, b"Content-Transfer-Encoding: " + cte]


def downgrade(content: bytes, nesting_limit: int = 100) -> bytes:
    """CRLF content with its 8bit and binary entities made 7bit, as Postfix's smtp sends it."""
    lines = content.split(b"\r\n")
    last = lines.pop() if lines and lines[-1] == b"" else None
    out: list[bytes] = []
    stack: list[tuple[bytes, bytes, bytes]] = []  # boundary, default type, subtype
    entity: _Entity | None = _Entity(b"text", b"plain")
    pending: list[bytes] = []  # the logical header being read
    body_domain = "7bit"
    for line in lines:
        if entity is not None:
            if pending and line[:1] in (b" ", b"\t"):
                pending.append(line)
                continue
            if pending:
                entity.header(pending)
                pending = []
            if _NAME.match(line):
                pending = [line]
                continue
            # the end of a header block (an empty line, or a body line right away)
            out += entity.end()
            body_domain = "7bit"
            if entity.ctype == b"message" and entity.stype == b"rfc822" and line == b"":
                out.append(line)
                entity = _Entity(b"text", b"plain")
                continue
            if entity.ctype == b"multipart":
                if entity.boundary is not None and len(stack) < nesting_limit:
                    digest = entity.stype == b"digest"
                    stack.append((entity.boundary, b"message" if digest else b"text",
                                  b"rfc822" if digest else b"plain"))
            else:  # a leaf, or message/global or /partial: Postfix encodes its body
                body_domain = entity.domain
            entity = None
            if line == b"":
                out.append(line)
                continue
        if line[:2] == b"--" and stack:
            hit = next((i for i in range(len(stack) - 1, -1, -1)
                        if line[2:].startswith(stack[i][0])), None)
            if hit is not None:
                boundary, ctype, stype = stack[hit]
                out.append(line)
                if line[2 + len(boundary):].startswith(b"--"):
                    del stack[hit:]
                    body_domain = "7bit"
                else:
                    del stack[hit + 1:]
                    entity = _Entity(ctype, stype)
                continue
        if body_domain != "7bit":
            out += _qp(line)
        else:
            out.append(line)
    if entity is not None:
        if pending:
            entity.header(pending)
        out += entity.end()
    if last is not None:
        out.append(last)
    return b"\r\n".join(out)
