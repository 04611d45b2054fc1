"""What every delivery agent shares (≈ log_adhoc.c, format_tv.c).

A delivery agent takes a :class:`DeliveryJob` off the bus, reads the
content, delivers it and answers with one :class:`DeliveryStatus`. This
module holds the parts that must look the same whichever agent did the
work: the ``to=<...>, relay=..., delay=..., delays=a/b/c/d, dsn=...,
status=...`` log line, the delivery metrics, and the outcome of one
recipient (an SMTP reply is read by :mod:`postbus.smtp.reply`). The job loop itself is
:mod:`postbus.job_loop`, so that each agent only writes ``deliver``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from postbus import metrics
from postbus.queue.entry import DeliveryJob, Recipient
from postbus.smtp.reply import Reply, Status, reply_status

log = logging.getLogger("postbus.delivery")


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient: status, enhanced code and the text Postfix shows."""

    status: Status
    dsn: str
    reason: str
    bounce_to: str = ""  # a bounce goes to this address, not to the sender (local's owner-)

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


#: format_tv(x) for x below one second at the default digits, by hundredths.
_HUNDREDTHS = ["0"] + [f"0.{q:02d}".rstrip("0") for q in range(1, 100)]


def format_tv(seconds: float, sig_dig: int = 2, max_dig: int = 2) -> str:
    """A time with only the digits that matter (≈ format_tv.c, to the digit).

    Large values round to whole seconds; small ones keep ``sig_dig``
    significant digits but never more than ``max_dig`` decimals
    (delay_logging_resolution_limit); trailing zeros are dropped.
    """
    total = max(0, round(seconds * 1_000_000))
    if sig_dig == 2 and max_dig == 2 and total < 10_000_000:
        # the common case (five times per delivery): below 1s hundredths, below 10s tenths
        if total < 995_000:
            return _HUNDREDTHS[(total + 5000) // 10000]
        tenths = (total + 50000) // 100000
        return str(tenths // 10) if tenths % 10 == 0 else f"{tenths // 10}.{tenths % 10}"
    return _format_usec(total, sig_dig, max_dig)


def _format_usec(total: int, sig_dig: int, max_dig: int) -> str:
    """format_tv() of ``total`` microseconds, digit by digit as format_tv.c."""
    million = 1_000_000
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
        arrival, active, handoff, setup = (
            self.arrival, self.active, self.handoff, self.conn_setup_done)
        if setup:
            c, d = setup - handoff, now - setup
        else:
            c, d = 0.0, now - handoff
        return (max(0.0, now - arrival), max(0.0, active - arrival), max(0.0, handoff - active),
                max(0.0, c), max(0.0, d))


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
    address, orig = rcpt.address, rcpt.orig_rcpt
    orig_to = f", orig_to=<{orig}>" if orig and orig.lower() != address.lower() else ""
    use = f", conn_use={stats.reuse_count + 1}" if stats.reuse_count > 0 else ""
    delay, a, b, c, d = stats.delays(now)
    line = (f"{queue_id}: to=<{address}>{orig_to}, relay={relay}{use}, "
            f"delay={format_tv(delay, 2, resolution)}, delays={format_tv(a, 2, resolution)}/"
            f"{format_tv(b, 2, resolution)}/{format_tv(c, 2, resolution)}/"
            f"{format_tv(d, 2, resolution)}, dsn={dsn}, status={status} ({reason})")
    log.info("%s", line)
    attempts, (stage_a, stage_b, stage_c, stage_d), total = _children(
        transport, status, dsn[:1] or "4")
    attempts.inc()
    stage_a.observe(a)
    stage_b.observe(b)
    stage_c.observe(c)
    stage_d.observe(d)
    if total is not None:
        total.observe(delay)
    return line


_Children = tuple[Any, tuple[Any, ...], Any]
_bound: dict[tuple[str, str, str], _Children] = {}


def _children(transport: str, status: str, dsn_class: str) -> _Children:
    """The labelled metrics of one kind of outcome, bound once: ``labels()`` costs more
    than the counting itself, six times per delivery."""
    key = (transport, status, dsn_class)
    got = _bound.get(key)
    if got is None:
        got = _bound[key] = (
            metrics.delivery_attempts.labels(transport, status, dsn_class),
            tuple(metrics.delivery_duration.labels(transport, stage)
                  for stage in metrics.QUEUE_STAGES),
            None if status == "deferred" else metrics.delivery_delay.labels(transport, status),
        )
    return got
