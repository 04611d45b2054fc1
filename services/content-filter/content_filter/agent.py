"""One job of the content-filter transport: check, re-inject, report (≈ an after-queue
content filter with its re-injection smtpd, FILTER_README).

Order: Authentication-Results (verification of what arrived), the HTTP
scanner's verdict, its header edits, then the DKIM signature over the
result. The message is re-injected as ONE new message (new queue ID, the
job's sender and recipients with their ORCPT and NOTIFY) through cleanup
without header/body checks and without a content filter (Postfix's
``-o content_filter= -o receive_override_options=no_header_body_checks``
re-injection listener); address mapping follows this service's own
receive_override_options, and headers are not rewritten again. Only once
the new message is queued are the recipients reported ``sent (250 2.0.0
Ok: queued as NEWID)``: a crash in between may queue it twice, never lose it.
"""

from __future__ import annotations

import logging
import re
import time

from content_filter.authres import Verifier
from content_filter.dkim_sign import Signer, SignError
from content_filter.scanner import Scanner, Verdict
from postbus import metrics
from postbus.cleanup import Cleanup
from postbus.cleanup.status import CleanupError
from postbus.config.loader import Config
from postbus.delivery import Stats, log_delivery
from postbus.queue.entry import DeliveryJob, QueueEntry, RcptResult, Recipient
from postbus.queue.file import QueueFile
from postbus.smtp import replies

log = logging.getLogger("postbus.content-filter")

RELAY = "content-filter"
SPAM_FLAG = b"X-Spam-Flag: YES\r\n"
SUBJECT_PREFIX = "***SPAM*** "
_SUBJECT = re.compile(rb"^Subject:[ \t]?(.*(?:\r\n[ \t].*)*)\r\n", re.I | re.M)

#: the outcome of each verdict that does not re-inject: (status, dsn, text)
REFUSED = {
    "tempfail": ("deferred", "4.7.1", "message content rejected for now"),
    "reject": ("bounced", "5.7.1", "message content rejected"),
}


def crlf(content: bytes) -> bytes:
    text = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def split(message: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded lines and CRLF) and the rest."""
    head, sep, body = message.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in (head + b"\r\n").split(b"\r\n")[:-1]:
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields, (b"\r\n" + body) if sep else b"\r\n"


def rewrite_subject(fields: list[bytes], subject: str) -> list[bytes]:
    for i, header in enumerate(fields):
        match = _SUBJECT.match(header)
        if match:
            old = match.group(1).decode("utf-8", "surrogateescape")
            new = subject or SUBJECT_PREFIX + old
            fields[i] = f"Subject: {new}\r\n".encode("utf-8", "surrogateescape")
            return fields
    return [*fields, f"Subject: {subject or SUBJECT_PREFIX.strip()}\r\n".encode()]


class FilterAgent:
    def __init__(self, cfg: Config, queue: QueueFile) -> None:
        self.cfg = cfg
        self.queue = queue
        self.cleanup = Cleanup(cfg)
        self.verifier = Verifier(cfg)
        self.signer = Signer(cfg)
        self.scanner = Scanner(cfg)
        self.long_ids = cfg.bool("enable_long_queue_ids")
        self.resolution = cfg.int("delay_logging_resolution_limit")

    async def close(self) -> None:
        await self.scanner.close()

    async def deliver(self, job: DeliveryJob, content: bytes, stats: Stats) -> list[RcptResult]:
        message = crlf(content)
        client_addr = helo = ""
        got = await self.queue.get(job.queue_id)
        if got is not None:
            client_addr, helo = got[0].client_addr, got[0].helo
        fields, body = split(message)
        if self.verifier.enabled:
            header, drop = await self.verifier.verify(message, job.sender, client_addr, helo)
            fields = [header] + [f for i, f in enumerate(fields) if i not in set(drop)]
        verdict = Verdict("accept")
        if self.scanner:
            verdict = await self.scanner.scan(
                b"".join(fields) + body, job.queue_id, job.sender,
                [r.address for r in job.recipients], client_addr, helo)
            if verdict.action == "add_header":
                fields = [SPAM_FLAG, *fields]
            elif verdict.action == "rewrite_subject":
                fields = rewrite_subject(fields, verdict.subject)
        if verdict.action in REFUSED:
            status, dsn, text = REFUSED[verdict.action]
            score = f" (score {verdict.score:g})" if verdict.score is not None else ""
            return self._all(job, stats, status, dsn, verdict.reason or text + score, verdict)
        message = b"".join(fields) + body
        if self.signer:
            try:
                _, signature = await self.signer.sign(message, job.sender)
            except SignError as exc:
                log.warning("warning: %s: %s", job.queue_id, exc)
                return self._all(job, stats, "deferred", "4.7.0", str(exc),
                                 Verdict("tempfail"))
            message = signature + message
        try:
            queue_id = await self.reinject(job, message, hold=verdict.action == "hold")
        except CleanupError as exc:
            dsn, _, text = exc.reply[4:].partition(" ")
            return self._all(job, stats, "deferred", dsn or "4.3.0", text or exc.reply,
                             Verdict("tempfail"))
        return self._all(job, stats, "sent", "2.0.0",
                         replies.QUEUED.format(queue_id=queue_id), verdict)

    async def reinject(self, job: DeliveryJob, message: bytes, *, hold: bool) -> str:
        """Queue the filtered message for the job's recipients; its new queue ID."""
        entry = QueueEntry(
            queue_id="", sender=job.sender,
            recipients=[Recipient(r.address, orig_rcpt=r.orig_rcpt, notify=r.notify)
                        for r in job.recipients],
            env_id=job.env_id, ret=job.ret, protocol="ESMTP", client_name="localhost",
            client_addr="127.0.0.1", helo="localhost", smtputf8=job.smtputf8,
        )
        # headers as they are: rewriting them again (masquerading...) would break the
        # signature just made; the envelope maps as receive_override_options says
        build = await self.cleanup.message(entry, message, context=None,
                                           mapping=self.cleanup.mapping)
        if hold:
            entry.queue = "hold"
        return await self.queue.enqueue(entry, b"", self.long_ids, build=build)

    def _all(self, job: DeliveryJob, stats: Stats, status: str, dsn: str, reason: str,
             verdict: Verdict) -> list[RcptResult]:
        metrics.content_filter_actions.labels(
            "hold" if verdict.action == "hold" else
            {"deferred": "tempfail", "bounced": "reject"}.get(status, "accept")).inc()
        now = time.time()
        results = []
        for index, rcpt in zip(job.indexes, job.recipients, strict=True):
            log_delivery(job.queue_id, rcpt, RELAY, stats, dsn, status, reason,
                         transport=job.transport, resolution=self.resolution, now=now)
            results.append(RcptResult(index, status, dsn, reason, RELAY))  # type: ignore[arg-type]
        return results
