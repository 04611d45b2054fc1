"""Dot-stuffing both ways (RFC 5321 4.5.2): the one rule the server and the client share.

The sender doubles the dot that starts a line and ends the data with a
line holding a lone dot; the receiver takes one leading dot off every
line. Both are done in bulk with ``bytes.replace`` rather than line by
line, because this is the hottest loop of ingress and delivery alike.
A bare LF ends a line on the way in, as Postfix accepts by default, and
any lone CR or LF becomes CRLF on the way out (RFC 5321 2.3.8).
"""

from __future__ import annotations

import re

__all__ = ["END", "crlf", "crlf_lines", "stuff", "unstuff"]

#: The line that ends the data.
END = b".\r\n"

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def unstuff(raw: bytes) -> bytes:
    """Data as received (without the final ``.`` line) -> CRLF content, leading dots removed."""
    if not raw:
        return b""
    text = b"\n" + raw.replace(b"\r\n", b"\n")
    text = text.replace(b"\n.", b"\n")
    return text[1:].replace(b"\n", b"\r\n")


def crlf(content: bytes) -> bytes:
    """Content with CRLF line ends only and a CRLF after the last line.

    Queued content already has CRLF line ends (cleanup writes them): that is
    checked without a regex pass and without copying (see :func:`crlf_lines`)."""
    if _lone_ends(content.split(b"\r\n")):
        content = _LINE_ENDS.sub(b"\r\n", content)
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    return content


def crlf_lines(content: bytes) -> list[bytes]:
    """The lines of :func:`crlf`'s result without their CRLF, and an empty last item
    (``b"\\r\\n".join()`` of them is that result)."""
    lines = content.split(b"\r\n")
    if _lone_ends(lines):
        lines = _LINE_ENDS.split(content)
    if lines[-1]:
        lines.append(b"")
    return lines


def _lone_ends(lines: list[bytes]) -> bool:
    """Whether a CR or LF is left once content is split at its CRLFs.

    Two C-speed passes (a join, then memchr for each byte) cost less than
    counting each kind of line end over the whole content."""
    rest = b"".join(lines)
    return b"\r" in rest or b"\n" in rest


def stuff(body: bytes) -> bytes:
    """CRLF lines (see :func:`crlf`) as sent after DATA: leading dots doubled, then ``.``."""
    body = body.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    return body + END
