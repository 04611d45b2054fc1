"""Non-delivery notifications (≈ Postfix bounce(8), RFC 3464).

A bounce is a new message from the null sender to the original sender,
queued through the same QueueStore as any other mail: a multipart/report
with Postfix's human-readable text, a message/delivery-status part with
one block per failed recipient, and the returned message (headers only for
RET=HDRS or when it exceeds bounce_size_limit). Mail from the null sender
is never bounced, which keeps bounce loops impossible.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time

from postbus import metrics
from postbus.bounce_template import FAILURE
from postbus.queue.entry import QueueEntry, Recipient
from postbus.service import ServiceContext

log = logging.getLogger("postbus.bounce")

_SAID = re.compile(r" said: (.*?)(?: \(in reply to [^)]*\))?$", re.S)

def _diagnostic(rcpt: Recipient) -> str:
    match = _SAID.search(rcpt.reason)
    if match:
        return f"smtp; {match.group(1)}"
    return f"X-Postfix; {rcpt.reason}"


def _headers_of(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def compose(entry: QueueEntry, content: bytes, hostname: str, size_limit: int) -> bytes:
    """The non-delivery report, its headers and text from the failure template
    (the one ``postbus postconf -t`` shows)."""
    failed = [r for r in entry.recipients if r.state in ("bounced", "expired")]
    boundary = f"{entry.queue_id}.{int(time.time())}/{hostname}"
    arrival = email.utils.formatdate(entry.arrival_time, localtime=True)
    lines = [
        f"From: {FAILURE.header_from(hostname)}",
        f"Subject: {FAILURE.subject}",
        f"To: {entry.sender}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        f"Message-Id: <{entry.queue_id}.{int(time.time() * 1000)}@{hostname}>",
        f"Date: {email.utils.formatdate(localtime=True)}",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={FAILURE.charset}",
        "",
        *FAILURE.expand({"myhostname": hostname}.get),
        "",
    ]
    lines += [f"<{r.address}>: {r.reason}" for r in failed]
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Postfix-Queue-ID: {entry.queue_id}",
        f"X-Postfix-Sender: rfc822; {entry.sender}",
        f"Arrival-Date: {arrival}",
    ]
    if entry.env_id:
        lines.insert(lines.index(f"Reporting-MTA: dns; {hostname}") + 1,
                     f"Original-Envelope-Id: {entry.env_id}")
    for rcpt in failed:
        lines += ["", f"Final-Recipient: rfc822; {rcpt.address}"]
        if rcpt.orig_rcpt and rcpt.orig_rcpt != rcpt.address:
            lines.append(f"Original-Recipient: rfc822;{rcpt.orig_rcpt}")
        lines += ["Action: failed", f"Status: {rcpt.dsn or '5.0.0'}"]
        if rcpt.relay and rcpt.relay not in ("none", "local"):
            lines.append(f"Remote-MTA: dns; {rcpt.relay.split('[')[0]}")
        lines.append(f"Diagnostic-Code: {_diagnostic(rcpt)}")
    headers_only = entry.ret.upper() == "HDRS" or len(content) > size_limit
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Undelivered Message"
        + (" Headers" if headers_only else ""),
        "Content-Type: " + ("text/rfc822-headers" if headers_only else "message/rfc822"),
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n"
    returned = _headers_of(content) if headers_only else content
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return head + returned + f"\r\n--{boundary}--\r\n".encode()


class Bouncer:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def notify(self, entry: QueueEntry) -> None:
        """Queue a non-delivery notification once per message (not for the null sender)."""
        if entry.notified:
            return
        if not entry.sender or entry.sender == self.ctx.cfg.get("double_bounce_sender"):
            log.info("%s: sender is null; no non-delivery notification", entry.queue_id)
            return
        store = self.ctx.queue
        content = await store.content(entry.queue_id, entry.chunks)
        cfg = self.ctx.cfg
        report = compose(entry, content, cfg.get("myhostname"), cfg.int("bounce_size_limit"))
        notice = QueueEntry(
            queue_id="",
            sender="",
            recipients=[Recipient(address=entry.sender, orig_rcpt=entry.sender)],
            bounce_of=entry.queue_id,
            client_name="localhost",
            client_addr="127.0.0.1",
            protocol="bounce",
        )
        new_id = await store.enqueue(notice, report, cfg.bool("enable_long_queue_ids"))
        log.info("%s: sender non-delivery notification: %s", entry.queue_id, new_id)
        metrics.bounces_generated.labels("non_delivery").inc()

        def mark(e: QueueEntry) -> bool:
            e.notified = True
            return True

        await store.modify(entry.queue_id, mark)
