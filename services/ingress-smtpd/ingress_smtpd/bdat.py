"""BDAT, RFC 3030 CHUNKING (≈ smtpd.c's bdat_cmd() and skip_bdat()).

A message comes as ``BDAT <count>`` chunks of exactly that many octets,
the last one flagged ``LAST``; no dot-stuffing, no end marker. Every chunk
is read whatever the reply will be, so the client and the server stay in
step: after an error the rest of the transaction's chunks are read and
dropped (``551 5.0.0 Discarded N bytes after earlier error``) until BDAT
LAST or RSET. A malformed BDAT command cannot be skipped (its payload size
is unknown): ``521`` and the session ends, as in Postfix.

Sizes are counted as Postfix counts them (``act_size``): each line as its
length plus two (a CRLF), a line longer than line_length_limit as that many
records of two more each; the message is stored with CRLF line ends, a last
line without one gets it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.data import queue_message
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")

OFF_T_MAX = 2**63 - 1
_CRLF = b"\r\n"


class Hangup(Exception):
    """A 421/521 reply was written: the session ends (smtpd_chat_reply's HANGUP)."""


class Chunks:
    """The content of one BDAT transaction, and Postfix's count of it."""

    def __init__(self, size_limit: int, line_limit: int) -> None:
        self.size_limit = size_limit
        self.line_limit = line_limit
        self.raw = bytearray()
        self.act_size = 0  # the complete lines so far, as Postfix counts them
        self.scanned = 0  # raw[:scanned] is counted
        self.too_big = False
        self._long = re.compile(rb"[^\n]{%d,}" % line_limit)

    def add(self, data: bytes) -> None:
        """One piece of a chunk, as it arrives."""
        if self.too_big:
            return
        self.raw += data
        end = self.raw.rfind(b"\n", self.scanned) + 1
        if end > self.scanned:
            self._count(bytes(self.raw[self.scanned:end]), complete=True)
            self.scanned = end

    def last(self) -> None:
        """The final chunk is in: a last line without its LF is a line too."""
        if not self.too_big and self.scanned < len(self.raw):
            self._count(bytes(self.raw[self.scanned:]), complete=False)
            self.scanned = len(self.raw)

    def _count(self, segment: bytes, complete: bool) -> None:
        lines = segment.count(b"\n") if complete else 1
        size = len(segment) + 2 * lines - segment.count(b"\n") - segment.count(_CRLF)
        for long in self._long.finditer(segment):
            length = len(long.group()) - (1 if long.group().endswith(b"\r") else 0)
            size += 2 * (length // self.line_limit)
        if self.size_limit and self.act_size + size > self.size_limit:
            self.too_big = True
            self.raw = bytearray()
            log.warning("NOQUEUE: queue file size limit exceeded")
            return
        self.act_size += size

    def pending_bytes(self) -> int:
        """What "lost connection after BDAT (N bytes)" counts."""
        return self.act_size + len(self.raw) - self.scanned

    def content(self) -> bytes:
        """The message with CRLF line ends."""
        data = bytes(self.raw).replace(_CRLF, b"\n").replace(b"\n", _CRLF)
        if data and not data.endswith(_CRLF):
            data += _CRLF
        return data


def parse_bdat(arg: str) -> tuple[int, bool] | None:
    """(count, LAST) of ``BDAT count [LAST]``, or None for Postfix's 521."""
    words = arg.split()
    if not 1 <= len(words) <= 2 or not words[0].isdigit() or not words[0].isascii():
        return None
    size = int(words[0])
    if size > OFF_T_MAX:
        return None
    if len(words) == 2 and words[1].upper() != "LAST":
        return None
    return size, len(words) == 2


async def do_bdat(session: Session, arg: str) -> bool:
    s, conn = session.s, session.conn
    if "CHUNKING" in session.discard:
        session.conn.write(r.BDAT_DISABLED)
        raise Hangup
    parsed = parse_bdat(arg)
    if parsed is None:
        log.warning("NOQUEUE: malformed BDAT command syntax from %s: %.100s",
                    session.namaddr, _printable(f"BDAT {arg}".rstrip()))
        session.conn.write(r.BDAT_SYNTAX)
        raise Hangup
    size, final = parsed
    if size == 0 and not final:
        log.warning("NOQUEUE: null BDAT request from %s", session.namaddr)
        return await _skip(session, size, final, r.BDAT_NULL)
    if session.bdat_state == "error":
        return await _skip(session, size, final, r.BDAT_DISCARDED.format(size=size))
    if session.chunks is None:
        if not session.recipients:
            reply = r.NEED_RCPT if session.sender is None else r.NO_VALID_RECIPIENTS
            return await _skip(session, size, final, reply)
        reject = await session.server.policy.check_data(session.check_state())
        if reject is None and (milters := milter.active(session)) is not None:
            reject = milter.check(session, await milters.data())
        if reject is not None:  # smtpd_data_restrictions, at the first chunk as in Postfix
            return await _skip(session, size, final, reject)
        session.chunks = Chunks(s.size_limit, s.line_limit)
    chunks = session.chunks
    if s.size_limit and chunks.act_size > s.size_limit - size:
        log.warning("NOQUEUE: BDAT request from %s exceeds message size limit", session.namaddr)
        return await _skip(session, size, final, r.BDAT_CHUNK_TOO_BIG)
    session.bdat_state = "ok"
    session.where = "BDAT content"
    await conn.read_exact(size, chunks.add)
    if final:
        chunks.last()
        session.where = "END-OF-MESSAGE"
        if chunks.too_big:
            session.reset()
            await session.reply(r.MESSAGE_TOO_BIG)
            return False
        ok = await queue_message(session, chunks.content(), r.BDAT_QUEUED, chunks.act_size)
        session.reset()
        return ok
    if chunks.too_big:  # the end-of-message reply now, then skip to the last chunk
        session.reset()
        session.bdat_state = "error"
        await session.reply(r.MESSAGE_TOO_BIG)
        return False
    conn.write(r.BDAT_OK.format(size=size))
    return True


async def _skip(session: Session, size: int, final: bool, reply: str) -> bool:
    """Read and drop the chunk, reply, and leave the transaction (LAST) or skip on.

    A chunk of more than 1.5 times message_size_limit is not read at all: the reply,
    then the end of the session (as later Postfix releases do; 3.7 reads it all)."""
    limit = session.s.size_limit
    if limit and size > limit * 1.5:
        log.warning("NOQUEUE: too much BDAT content -- disabling further input from %s",
                    session.namaddr)
        session.conn.write(reply)
        raise Hangup
    await session.conn.read_exact(size, None)
    await session.reply(reply)
    if final:
        session.reset()
    else:
        session.bdat_state = "error"
    return False


def _printable(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)
