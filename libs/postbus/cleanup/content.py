"""The message content as cleanup sees it (≈ cleanup_message.c, mime_state.c, mail_date.c).

:func:`split_headers` separates the primary header block from the body
(the obsolete ``Name :`` becomes ``Name:``; a header longer than
header_size_limit is cut where Postfix cuts it) and notes which headers are there;
:func:`missing_headers` gives the Message-Id:, Date: and From: headers
cleanup appends when they are missing: the Resent- ones when the message
has any Resent- header. Every way into the queue (smtpd, sendmail, bounces)
uses them, so a message looks the same whichever way it came.

The usual message (a blank line after well-formed headers, a block smaller
than header_size_limit) takes three regex passes; anything else a loop.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from postbus.cleanup.headers import RESENT_HEADERS
from postbus.mail_date import mail_date
from postbus.tok822 import quote_822_local

CRLF = b"\r\n"


def _is_header(line: bytes) -> bool:
    """``Name:`` with a name of printable ASCII (≈ is_header())."""
    colon = line.find(b":")
    if colon <= 0:
        return False
    name = line[:colon].rstrip(b" \t")
    return bool(name) and all(33 <= c <= 126 for c in name)


@dataclass
class Headers:
    """What cleanup learned from the header block."""

    block: bytes  # the (possibly truncated) header lines, each ending in CRLF
    body: bytes  # the rest, starting with the empty separator line when there is one
    seen: set[str] = field(default_factory=set)
    message_id: str = ""


#: A header block of well-formed lines only, each header shorter than the limit.
_BLOCK = re.compile(rb"(?:[!-9;-~]+[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*)*")
_NAMES = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:((?:[^\n]*\n)(?:[ \t][^\n]*\n)*)", re.M | re.I)
_SPACE_COLON = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.M)


def split_headers(content: bytes, size_limit: int, line_limit: int = 2048) -> Headers:
    """Separate the header block from the body and note the headers cleanup cares about.

    The obsolete ``Name :`` form becomes ``Name:`` (≈ mime_state.c), as Postfix
    writes it into the queue.

    The usual message (blank line after the headers, block smaller than
    header_size_limit) takes three regex passes; anything else the loop.
    """
    end = content.find(b"\r\n\r\n")
    if 0 < end < size_limit and _BLOCK.fullmatch(content, 0, end + 2):
        block = content[: end + 2]
        if b" :" in block or b"\t:" in block:  # else the substitution cannot match
            block = _SPACE_COLON.sub(rb"\1:", block)
        seen = {name.decode("ascii") for name in _NAMES.findall(block.lower())}
        message_id = ""
        if "message-id" in seen:
            found = _MESSAGE_ID.search(block)
            if found:
                message_id = " ".join(found.group(1).decode("utf-8", "replace").split())
        return Headers(block, content[end + 2 :], seen, message_id)
    return _split_headers_slowly(content, size_limit, line_limit)


def _keep(length: int, buf: int, size_limit: int, line_limit: int) -> tuple[int, int]:
    """How much of a header line of ``length`` bytes Postfix keeps when its header
    buffer already holds ``buf`` bytes (≈ mime_state_update()): the line arrives as
    records of line_length_limit bytes; the first is always taken, each further one
    while the buffer is shorter than header_size_limit. Returns (kept, new buf)."""
    kept = min(length, line_limit)
    buf += kept
    while kept < length and buf < size_limit:
        step = min(line_limit, length - kept)
        kept += step
        buf += step
    return kept, buf


def _cut(lines: list[bytes], size_limit: int) -> list[bytes]:
    """A header longer than header_size_limit as cleanup writes it (≈ cleanup_out_header()):
    cut at the last line boundary, or mid-line when that would lose more than 10%."""
    out: list[bytes] = []
    pos = 0
    for line in lines:
        end = pos + len(line)
        if end > size_limit:
            if pos <= 0.9 * size_limit:
                out.append(line[: size_limit - pos])
            break
        out.append(line)
        pos = end + 1
    return out


def _split_headers_slowly(content: bytes, size_limit: int, line_limit: int) -> Headers:
    pos = 0
    n = len(content)
    kept: list[bytes] = []
    seen: set[str] = set()
    buf = 0  # the header as Postfix buffers it: lines joined by "\n", no CR
    current: list[bytes] = []  # its lines as kept, without CRLF
    truncated = False

    def done() -> None:
        nonlocal truncated
        if buf > size_limit:
            truncated = True
            kept.extend(line + CRLF for line in _cut(current, size_limit))
        else:
            kept.extend(line + CRLF for line in current)

    while pos < n:
        end = content.find(CRLF, pos)
        end = n if end < 0 else end + 2
        line = content[pos:end]
        text = line.removesuffix(CRLF)
        if line[:1] in (b" ", b"\t") and current:
            pos = end
            if buf >= size_limit:  # the rest of this header is discarded
                truncated = True
                continue
            keep, buf = _keep(len(text), buf + 1, size_limit, line_limit)
        elif not _is_header(line):
            break
        else:
            if current:
                done()
            current = []
            seen.add(line[: line.find(b":")].rstrip(b" \t").decode("ascii").lower())
            pos = end
            keep, buf = _keep(len(text), 0, size_limit, line_limit)
        truncated |= keep < len(text) or not line.endswith(CRLF)
        current.append(text[:keep])
    if current:
        done()
    block = b"".join(kept) if truncated else content[:pos]
    block = _SPACE_COLON.sub(rb"\1:", block)
    message_id = ""
    if "message-id" in seen:
        found = _MESSAGE_ID.search(block)
        if found:
            message_id = " ".join(found.group(1).decode("utf-8", "replace").split())
    return Headers(block, content[pos:], seen, message_id)


def missing_headers(
    headers: Headers, sender: str, queue_id: str, *, myhostname: str, arrival: float,
    long_queue_ids: bool = False,
) -> tuple[list[str], str]:
    """The headers cleanup appends, and the message ID to log (≈ cleanup_header_done_callback()).

    ``sender`` is the envelope sender as queued; the added Message-Id names
    the queue ID (with a time stamp unless enable_long_queue_ids)."""
    added: list[str] = []
    message_id = headers.message_id
    resent = "Resent-" if headers.seen & RESENT_HEADERS else ""
    if f"{resent}message-id".lower() not in headers.seen:
        stamp = "" if long_queue_ids else time.strftime("%Y%m%d%H%M%S.", time.gmtime(arrival))
        added_id = f"<{stamp}{queue_id}@{myhostname}>"
        added.append(f"{resent}Message-Id: {added_id}")
        if not resent and not message_id:
            message_id = added_id
    if f"{resent}date".lower() not in headers.seen:
        added.append(f"{resent}Date: {mail_date(arrival)}")
    if f"{resent}from".lower() not in headers.seen:
        added.append(f"{resent}From: {quote_822_local(sender or 'MAILER-DAEMON')}")
    return added, message_id


def join(headers: Headers, added: list[str], top: bytes = b"") -> bytes:
    """``top`` (a Received: header), the header block, the added headers, an empty
    line and the body."""
    extra = "".join(h + "\r\n" for h in added).encode("utf-8", "surrogateescape")
    body = headers.body
    if body and not body.startswith(CRLF):
        body = CRLF + body  # headers and body are always separated by an empty line
    return top + headers.block + extra + body


def header_lines(block: bytes) -> list[bytes]:
    """The headers of a CRLF header block, each with its continuation lines."""
    out: list[bytes] = []
    pos, n = 0, len(block)
    while pos < n:
        end = block.find(b"\r\n", pos)
        end = n if end < 0 else end + 2
        line = block[pos:end]
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        else:
            out.append(line)
        pos = end
    return out
