"""From received DATA to the queued message (≈ smtpd's DATA loop + the cleanup daemon).

The content is handled in bulk with ``bytes.replace`` rather than line by
line, because protocol CPU per message is the ingress budget: the line
ends become CRLF (a bare LF ends a line, as Postfix accepts by default),
the leading dot of every line goes (:mod:`postbus.smtp.dotstuff`), and
only the header block is parsed.  Long lines are kept whole: Postfix splits them into
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
has drawn that ID. With header or body checks, the ID is drawn before
cleanup (the log lines name it) and the checks see the Received: header
too, as Postfix's cleanup does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from postbus.cleanup import CleanupState, Origin
from postbus.cleanup.content import Headers, join, mail_date, missing_headers, split_headers
from postbus.queue.entry import QueueEntry, Recipient
from postbus.smtp.address import MailArgs, RcptArgs, quote_local

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.state import CheckMemory

__all__ = ["Message", "carry", "mail_date", "split_headers"]


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
    tls: bool = False  # received over TLS: "with ESMTPS" (RFC 3848)
    tls_lines: list[str] = field(default_factory=list)  # smtpd_tls_received_header's comment
    queue_id: str = ""  # drawn before cleanup when header/body checks run
    top: bytes | None = None  # the Received: header as the checks left it
    hold: bool = False  # a HOLD action
    filter: str = ""  # content_filter, or a FILTER action's transport:destination
    bcc: list[str] = field(default_factory=list)  # BCC actions of smtpd's restrictions
    sasl_username: str | None = None  # SMTP AUTH: "with ESMTPA" (RFC 3848)
    sasl_header: bool = False  # smtpd_sasl_authenticated_header: "(Authenticated sender: u)"
    frozen: bytes | None = None  # the content as milters left it (built once, before them)

    async def rewrite(self, state: CleanupState, *, filter: bool = False) -> None:
        """Postfix's cleanup over envelope, content checks (``filter``) and headers;
        raises CleanupError, and then nothing of this message may be queued, or
        MessageDiscarded."""
        self.sender = await state.sender(self.sender)
        for rcpt in self.recipients:
            await state.recipient(rcpt.address, orcpt=rcpt.orcpt, notify=rcpt.notify)
        for bcc in self.bcc:  # smtpd's BCC actions: extracted recipients, NOTIFY=NEVER
            await state.recipient(bcc, notify="NEVER")
        if filter:
            self.queue_id = qid = state.status.queue_id
            origin = Origin(qid, f"{self.client_name}[{self.client_addr}]", self.sender,
                            state.last_recipient,
                            self.protocol, self.helo)
            self.top, self.content = await state.inspect(self.content, origin,
                                                         self.received(qid))
        headers = split_headers(self.content, self.header_size_limit)
        headers.block = await state.header_block(headers.block, self.header_size_limit)
        state.finish()
        self.hold, self.filter = state.hold, state.filter
        self.queued, self.headers = state.recipients, headers

    def entry(self) -> QueueEntry:
        recipients = self.queued if self.queued is not None else [
            Recipient(r.address, orig_rcpt=r.orcpt or r.address, notify=r.notify)
            for r in self.recipients
        ]
        return QueueEntry(
            queue_id=self.queue_id,
            queue="hold" if self.hold else "incoming",
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
            filter=self.filter,
        )

    def received(self, queue_id: str) -> bytes:
        """Postfix's Received: header (≈ smtpd.c's common_pre_message_handling()): for <rcpt>
        only with one recipient; ``with UTF8SMTP`` for an SMTPUTF8 envelope, an ``S`` after
        ESMTP over TLS, an ``A`` after SMTP AUTH (RFC 3848)."""
        addr = self.client_addr
        if ":" in addr:
            addr = "IPv6:" + addr
        protocol = "UTF8SMTP" if self.mail.smtputf8 else self.protocol
        if self.tls and self.protocol == "ESMTP":
            protocol += "S"
        if self.sasl_username is not None and self.protocol == "ESMTP":
            protocol += "A"
        tls = "".join(line + "\r\n" for line in self.tls_lines)
        if self.sasl_username is not None and self.sasl_header:
            tls += f"\t(Authenticated sender: {comment_sanitize(self.sasl_username)})\r\n"
        text = (
            f"Received: from {self.helo or self.client_name} ({self.client_name} [{addr}])\r\n"
            f"{tls}\tby {self.myhostname} ({self.mail_name}) with {protocol}"
            + (f" id {queue_id}" if queue_id else "")  # none for a before-queue filter
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
        if self.frozen is not None:  # milters saw (and may have changed) the whole message
            self.message_id = entry.message_id = split_headers(
                self.frozen, self.header_size_limit).message_id
            return self.frozen
        headers = self.headers or split_headers(self.content, self.header_size_limit)
        added: list[str] = []
        self.message_id = headers.message_id
        if self.add_missing:
            added, self.message_id = missing_headers(
                headers, self.sender, qid, myhostname=self.myhostname, arrival=self.arrival,
                long_queue_ids=self.long_queue_ids)
        entry.message_id = self.message_id
        top = self.top if self.top is not None and qid == self.queue_id else None
        return join(headers, added, self.received(qid) if top is None else top)


def carry(state: CleanupState, memory: CheckMemory, content_filter: str,
          message: Message) -> None:
    """What smtpd's restrictions decided for the whole message, handed to cleanup
    (≈ smtpd's saved_flags, saved_filter, saved_redirect and saved_bcc records): a
    HOLD, the last FILTER (else content_filter), the last REDIRECT, BCC recipients."""
    state.hold = memory.hold
    state.filter = memory.filter or content_filter
    state.redirect = memory.redirect
    message.bcc = list(memory.bcc)


def comment_sanitize(text: str) -> str:
    """Text fit for an RFC 822 comment (≈ smtpd.c's comment_sanitize()): printable ASCII
    only, a backslash or an unbalanced ``)`` becomes ``?`` (each byte of anything else
    too), and what is left open is closed."""
    out: list[str] = []
    depth = 0
    for byte in text.encode("utf-8", "surrogateescape"):
        ch = chr(byte)
        if not 0x20 <= byte < 0x7F or ch == "\\":
            ch = "?"
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth > 0:
                depth -= 1
            else:
                ch = "?"
        out.append(ch)
    return "".join(out) + ")" * depth
