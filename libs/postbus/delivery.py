"""What every delivery agent shares (≈ log_adhoc.c, format_tv.c, smtp_chat.c's reply parsing).

A delivery agent takes a :class:`DeliveryJob` off the bus, reads the
content, delivers it and answers with one :class:`DeliveryStatus`. This
module holds the parts that must look the same whichever agent did the
work: the ``to=<...>, relay=..., delay=..., delays=a/b/c/d, dsn=...,
status=...`` log line, the delivery metrics, and the reading of an SMTP
reply into status and enhanced status code. The job loop itself is
:mod:`postbus.job_loop`, so that each agent only writes ``deliver``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Literal

from postbus import metrics
from postbus.queue.entry import DeliveryJob, Recipient

log = logging.getLogger("postbus.delivery")

Status = Literal["sent", "deferred", "bounced"]


_DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


# -- replies ------------------------------------------------------------------


def reply_status(code: int) -> Status:
    """2xx sent, 4xx deferred, anything else bounced (Postfix treats odd codes as hard)."""
    if 200 <= code < 300:
        return "sent"
    if 400 <= code < 500:
        return "deferred"
    return "bounced"


def reply_dsn(code: int, text: str) -> str:
    """The enhanced status code of a reply (≈ smtp_chat_resp()).

    A code at the start of the text counts only when its class digit agrees
    with the reply code; otherwise Postfix derives ``X.0.0`` from the reply
    class (and ``5.5.0`` for a reply outside 2xx/4xx/5xx).
    """
    match = _DSN_RE.match(text.lstrip())
    first = str(code)[:1]
    if match and match.group(1) == first:
        return match.group(0)
    return f"{first}.0.0" if first in ("2", "4", "5") else "5.5.0"


@dataclass(frozen=True)
class Reply:
    """One SMTP/LMTP reply: ``text`` is every line's text joined with newlines."""

    code: int
    text: str

    @property
    def status(self) -> Status:
        return reply_status(self.code)

    @property
    def dsn(self) -> str:
        return reply_dsn(self.code, self.text)

    def __str__(self) -> str:
        """The reply as Postfix logs it: ``550 5.1.1 text``, lines joined by spaces."""
        return f"{self.code} {' '.join(self.text.splitlines())}".rstrip()


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient: status, enhanced code and the text Postfix shows."""

    status: Status
    dsn: str
    reason: str

    @classmethod
    def from_reply(cls, reply: Reply, reason: str | None = None) -> Outcome:
        return cls(reply.status, reply.dsn, str(reply) if reason is None else reason)

    @classmethod
    def by_dsn(cls, dsn: str, reason: str) -> Outcome:
        """Status from the code's class: 2 sent, 4 deferred, 5 bounced."""
        return cls(reply_status(int(dsn[:1] or 5) * 100), dsn, reason)


def soften(dsn: str) -> str:
    """Turn a hard code into its soft twin (5.x.y -> 4.x.y), as Postfix does for retries."""
    return "4" + dsn[1:] if dsn.startswith("5") else dsn


# -- the log line ---------------------------------------------------------------


def format_tv(seconds: float, sig_dig: int = 2, max_dig: int = 2) -> str:
    """A time with only the digits that matter (≈ format_tv.c, to the digit).

    Large values round to whole seconds; small ones keep ``sig_dig``
    significant digits but never more than ``max_dig`` decimals
    (delay_logging_resolution_limit); trailing zeros are dropped.
    """
    million = 1_000_000
    total = max(0, round(seconds * million))
    sec, usec = divmod(total, million)
    ures = million // 10**max_dig
    wid = 10**sig_dig
    if ures < million:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (million // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    if ures > 1:
        usec += ures // 2
        if usec >= million:
            sec += 1
            usec -= million
    out = str(sec)
    if usec >= ures:
        out += "."
        rem, n = usec, million // 10
        while rem >= ures and n > 0:
            out += str(rem // n)
            rem %= n
            n //= 10
    return out


@dataclass
class Stats:
    """Time stamps of one delivery attempt (≈ MSG_STATS), as epoch seconds.

    ``active`` is when the qmgr took the message in, ``handoff`` when this
    agent picked the job up, ``conn_setup_done`` when a network agent had
    its session ready (0 for local delivery), ``reuse_count`` how often the
    session had been used before (Postfix's ``conn_use=`` is that plus one).
    ``site_failure`` is set by an agent when the destination itself failed
    (no server took a session, or it broke off): the qmgr's negative
    feedback, which may suspend the destination (≈ the hop status of
    deliver_request).
    """

    arrival: float
    active: float
    handoff: float
    conn_setup_done: float = 0.0
    reuse_count: int = 0
    site_failure: Outcome | None = None

    @classmethod
    def for_job(cls, job: DeliveryJob, handoff: float | None = None) -> Stats:
        active = job.active_time or job.queued_time or job.arrival_time
        return cls(job.arrival_time, active, time.time() if handoff is None else handoff)

    def delays(self, now: float) -> tuple[float, float, float, float, float]:
        """delay and delays=a/b/c/d as log_adhoc() computes them."""
        a = self.active - self.arrival
        b = self.handoff - self.active
        if self.conn_setup_done:
            c, d = self.conn_setup_done - self.handoff, now - self.conn_setup_done
        else:
            c, d = 0.0, now - self.handoff
        a, b, c, d = (max(0.0, x) for x in (a, b, c, d))
        return max(0.0, now - self.arrival), a, b, c, d


def log_delivery(
    queue_id: str,
    rcpt: Recipient,
    relay: str,
    stats: Stats,
    dsn: str,
    status: str,
    reason: str,
    *,
    transport: str,
    resolution: int = 2,
    now: float | None = None,
) -> str:
    """Log and count one recipient's delivery outcome; returns the line (≈ log_adhoc()).

    ``QID: to=<rcpt>, orig_to=<orig>, relay=..., [conn_use=N, ]delay=...,
    delays=a/b/c/d, dsn=X.Y.Z, status=... (reason)``. ``orig_to`` appears
    only when it differs (case-insensitively) from the recipient.
    """
    now = time.time() if now is None else now
    line = f"{queue_id}: to=<{rcpt.address}>"
    if rcpt.orig_rcpt and rcpt.orig_rcpt.lower() != rcpt.address.lower():
        line += f", orig_to=<{rcpt.orig_rcpt}>"
    line += f", relay={relay}"
    if stats.reuse_count > 0:
        line += f", conn_use={stats.reuse_count + 1}"
    delay, *parts = stats.delays(now)
    line += f", delay={format_tv(delay, 2, resolution)}, delays="
    line += "/".join(format_tv(x, 2, resolution) for x in parts)
    line += f", dsn={dsn}, status={status} ({reason})"
    log.info("%s", line)
    metrics.delivery_attempts.labels(transport, status, dsn[:1] or "4").inc()
    for stage, value in zip(metrics.QUEUE_STAGES, parts, strict=True):
        metrics.delivery_duration.labels(transport, stage).observe(value)
    if status != "deferred":
        metrics.delivery_delay.labels(transport, status).observe(delay)
    return line
