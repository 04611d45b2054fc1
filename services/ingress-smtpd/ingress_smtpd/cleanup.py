"""From received DATA to the queued message (≈ smtpd's DATA loop + the cleanup daemon).

The content is handled in bulk with ``bytes.replace`` rather than line by
line, because protocol CPU per message is the ingress budget: the line
ends become CRLF (a bare LF ends a line, as Postfix accepts by default),
the leading dot of every line goes (dot-unstuffing), and only the header
block is parsed.  Long lines are kept whole: Postfix splits them into
records of line_length_limit bytes but joins them again on delivery.

As cleanup does, one header longer than header_size_limit is cut (the
excess is discarded). :meth:`Message.rewrite` then runs Postfix's address
rewriting (:mod:`postbus.cleanup`): the envelope sender and recipients
(canonical maps, masquerading, virtual aliases) and the addresses in the
header block, in the client's header rewriting context. For clients in
local_header_rewrite_clients (or everyone with always_add_missing_headers,
or remote clients when remote_header_rewrite_domain is set) missing
Message-Id:, Date: and From: headers are appended to the header block;
when the message has any Resent- header, the missing ones are the
Resent-Message-Id:, Resent-Date: and Resent-From: headers instead. The
Received: header goes on top; its ``id`` and the added Message-Id name the
queue ID, so the content is built by :meth:`Message.build` once the store
has drawn that ID.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from postbus.cleanup import CleanupState
from postbus.cleanup.headers import RESENT_HEADERS
from postbus.queue.entry import QueueEntry, Recipient
from postbus.smtp.address import MailArgs, RcptArgs, quote_local

CRLF = b"\r\n"


def unstuff(raw: bytes) -> bytes:
    """DATA as received (without the final ``.`` line) -> CRLF content, dots removed."""
    if not raw:
        return b""
    text = b"\n" + raw.replace(b"\r\n", b"\n")
    text = text.replace(b"\n.", b"\n")
    return text[1:].replace(b"\n", CRLF)


def mail_date(now: float) -> str:
    """``Wed,  5 Nov 2025 13:28:55 +0000 (UTC)`` (≈ mail_date.c: %e, numeric zone, name)."""
    tm = time.localtime(now)
    offset = tm.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    zone = f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    return time.strftime("%a, %e %b %Y %H:%M:%S ", tm) + f"{zone} ({tm.tm_zone})"


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


def split_headers(content: bytes, size_limit: int) -> Headers:
    """Separate the header block from the body and note the headers cleanup cares about.

    The obsolete ``Name :`` form becomes ``Name:`` (≈ mime_state.c), as Postfix
    writes it into the queue.

    The usual message (blank line after the headers, block smaller than
    header_size_limit) takes three regex passes; anything else the loop.
    """
    end = content.find(b"\r\n\r\n")
    if 0 < end < size_limit and _BLOCK.fullmatch(content, 0, end + 2):
        block = _SPACE_COLON.sub(rb"\1:", content[: end + 2])
        seen = {name.decode("ascii").lower() for name in _NAMES.findall(block)}
        message_id = ""
        if "message-id" in seen:
            found = _MESSAGE_ID.search(block)
            if found:
                message_id = " ".join(found.group(1).decode("utf-8", "replace").split())
        return Headers(block, content[end + 2 :], seen, message_id)
    return _split_headers_slowly(content, size_limit)


def _split_headers_slowly(content: bytes, size_limit: int) -> Headers:
    pos = 0
    n = len(content)
    kept: list[bytes] = []
    seen: set[str] = set()
    message_id = ""
    current = 0  # size of the header being read
    name = ""
    dropping = False
    truncated = False
    while pos < n:
        end = content.find(CRLF, pos)
        end = n if end < 0 else end + 2
        line = content[pos:end]
        if line[:1] in (b" ", b"\t") and kept:
            current += len(line)
            if dropping or current > size_limit:
                dropping = truncated = True
            else:
                kept.append(line)
                if name == "message-id":
                    message_id += " " + line.decode("utf-8", "replace").strip()
            pos = end
            continue
        if not _is_header(line):
            break
        name = line[: line.find(b":")].rstrip(b" \t").decode("ascii").lower()
        seen.add(name)
        current = len(line)
        dropping = current > size_limit
        if dropping:
            truncated = True
            kept.append(line[: size_limit - 2].rstrip(b"\r") + CRLF)
        else:
            kept.append(line)
        if name == "message-id":
            message_id = line.split(b":", 1)[1].decode("utf-8", "replace").strip()
        pos = end
    block = b"".join(kept) if truncated else content[:pos]
    return Headers(_SPACE_COLON.sub(rb"\1:", block), content[pos:], seen, message_id.strip())


@dataclass
class Message:
    """One accepted transaction on its way into the queue."""

    sender: str
    mail: MailArgs
    recipients: list[RcptArgs]
    content: bytes  # unstuffed, CRLF
    client_name: str
    client_addr: str
    helo: str
    protocol: str
    myhostname: str
    mail_name: str
    header_size_limit: int
    add_missing: bool
    arrival: float = field(default_factory=time.time)
    message_id: str = ""
    long_queue_ids: bool = False
    queued: list[Recipient] | None = None  # the recipients as cleanup rewrote them
    headers: Headers | None = None  # the header block as cleanup rewrote it

    async def rewrite(self, state: CleanupState) -> None:
        """Postfix's cleanup over envelope and headers; raises CleanupError, and then
        nothing of this message may be queued."""
        self.sender = await state.sender(self.sender)
        for rcpt in self.recipients:
            await state.recipient(rcpt.address, orcpt=rcpt.orcpt, notify=rcpt.notify)
        headers = split_headers(self.content, self.header_size_limit)
        headers.block = await state.header_block(headers.block, self.header_size_limit)
        state.finish()
        self.queued, self.headers = state.recipients, headers

    def entry(self) -> QueueEntry:
        recipients = self.queued if self.queued is not None else [
            Recipient(r.address, orig_rcpt=r.orcpt or r.address, notify=r.notify)
            for r in self.recipients
        ]
        return QueueEntry(
            queue_id="",
            sender=self.sender,
            recipients=recipients,
            arrival_time=self.arrival,
            client_name=self.client_name,
            client_addr=self.client_addr,
            helo=self.helo,
            protocol=self.protocol,
            env_id=self.mail.envid,
            ret=self.mail.ret,
            smtputf8=self.mail.smtputf8,
        )

    def received(self, queue_id: str) -> bytes:
        """Postfix's Received: header (≈ smtpd_received()): for <rcpt> only with one recipient."""
        addr = self.client_addr
        if ":" in addr:
            addr = "IPv6:" + addr
        text = (
            f"Received: from {self.helo or self.client_name} ({self.client_name} [{addr}])\r\n"
            f"\tby {self.myhostname} ({self.mail_name}) with {self.protocol} id {queue_id}"
        )
        date = mail_date(self.arrival)
        if len(self.recipients) == 1:
            text += f"\r\n\tfor <{quote_local(self.recipients[0].address)}>; {date}\r\n"
        else:
            text += f";\r\n\t{date}\r\n"
        return text.encode("utf-8", "surrogateescape")

    def build(self, entry: QueueEntry) -> bytes:
        """The queued content for ``entry.queue_id``; sets ``message_id`` (and the entry's)."""
        qid = entry.queue_id
        headers = self.headers or split_headers(self.content, self.header_size_limit)
        added: list[str] = []
        self.message_id = headers.message_id
        if self.add_missing:
            resent = "Resent-" if headers.seen & RESENT_HEADERS else ""
            if f"{resent}message-id".lower() not in headers.seen:
                stamp = time.strftime("%Y%m%d%H%M%S.", time.gmtime(self.arrival))
                added_id = f"<{'' if self.long_queue_ids else stamp}{qid}@{self.myhostname}>"
                added.append(f"{resent}Message-Id: {added_id}")
                if not resent and not self.message_id:
                    self.message_id = added_id
            if f"{resent}date".lower() not in headers.seen:
                added.append(f"{resent}Date: {mail_date(self.arrival)}")
            if f"{resent}from".lower() not in headers.seen:
                added.append(f"{resent}From: {quote_local(self.sender) or 'MAILER-DAEMON'}")
        entry.message_id = self.message_id
        extra = "".join(h + "\r\n" for h in added).encode("utf-8", "surrogateescape")
        body = headers.body
        if body and not body.startswith(CRLF):
            body = CRLF + body  # headers and body are always separated by an empty line
        return self.received(qid) + headers.block + extra + body
