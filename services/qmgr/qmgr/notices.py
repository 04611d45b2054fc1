"""Who is told what about a message's delivery (≈ bounce(8)'s notify, warn and
trace services, and the qmgr's decision to call them).

Three notices, each sent by the qmgr at the end of a delivery attempt:

* :meth:`Bouncer.failure`: recipients that bounced or expired. The sender
  is told of those whose NOTIFY asks for FAILURE (or that gave no NOTIFY),
  from the null sender, returning the message (headers only for RET=HDRS
  or past bounce_size_limit). With ``bounce`` in notify_classes,
  bounce_notice_recipient gets a postmaster copy of every failed recipient
  (NOTIFY=NEVER included) with the headers only.
* :meth:`Bouncer.delay`: recipients still deferred once the message is
  delay_warning_time old, for NOTIFY=DELAY (or no NOTIFY); with ``delay``
  in notify_classes, delay_notice_recipient gets a copy. Once per message.
* :meth:`Bouncer.success`: recipients delivered with NOTIFY=SUCCESS.

Never a bounce of a bounce: a notice about mail from the null sender goes
to 2bounce_notice_recipient (``bounce`` or ``2bounce`` in notify_classes;
``2bounce`` for success notices) from the double-bounce sender, or to no
one; a notice about mail from the double-bounce sender (an undeliverable
postmaster notice) is dropped with Postfix's warning.

The notices are queued through the injected ``enqueue`` function, so this
module knows nothing of how the queue stores them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from postbus import metrics
from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from postbus.rewrite import RewriteRules
from postbus.tok822 import internalize, quote_822_local, scan
from qmgr.bounce_template import MAIL_DAEMON, TEMPLATES, Kind, expand_text
from qmgr.dsn_report import Original, Report, Row, Style, compose

log = logging.getLogger("postbus.bounce")
cleanup_log = logging.getLogger("postbus.cleanup")

#: ``enqueue(entry, build)``: queue a new message whose content is
#: ``build(queue_id)``; returns the queue ID.
Enqueue = Callable[[QueueEntry, Callable[[str], bytes]], Awaitable[str]]
#: ``content(entry)``: the queued content of a message.
Content = Callable[[QueueEntry], Awaitable[bytes]]

_PEER_SAID = re.compile(
    r"host (\S+?)\[[^\]]*\] (?:said|refused to talk to me): (.*?)(?: \(in reply to [^)]*\))?",
    re.S,
)
_SMTP_REPLY = re.compile(r"[2-5]\d\d[ -]")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
_DISCARDED = "undeliverable postmaster notification discarded"


def wants(rcpt: Recipient, what: str) -> bool:
    """Does this recipient's NOTIFY ask for ``what`` (FAILURE, DELAY or SUCCESS)?
    No NOTIFY means FAILURE and DELAY, as RFC 3461 leaves it to the MTA."""
    words = {w.strip().upper() for w in rcpt.notify.split(",") if w.strip()}
    if not words:
        return what in ("FAILURE", "DELAY")
    return what in words


@dataclass(frozen=True)
class Policy:
    """The configuration the decisions read."""

    classes: frozenset[str]  # notify_classes
    bounce_rcpt: str
    twobounce_rcpt: str
    delay_rcpt: str
    double_bounce: str  # double_bounce_sender@$myhostname
    delay_warning_time: int

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        rules = RewriteRules.local(cfg)
        return cls(
            classes=frozenset(w.lower() for w in cfg.list("notify_classes")),
            bounce_rcpt=qualify(rules, cfg.get("bounce_notice_recipient")),
            twobounce_rcpt=qualify(rules, cfg.get("2bounce_notice_recipient")),
            delay_rcpt=qualify(rules, cfg.get("delay_notice_recipient")),
            double_bounce=f"{cfg.get('double_bounce_sender')}@{cfg.get('myhostname')}",
            delay_warning_time=int(cfg.time("delay_warning_time")),
        )

    def is_double_bounce(self, address: str) -> bool:
        return address.lower() == self.double_bounce.lower()


@dataclass(frozen=True)
class Plan:
    """One notice to queue: its template, envelope and recipients."""

    kind: Kind
    postmaster: bool
    sender: str  # the notice's envelope sender: "" or the double-bounce address
    to: str  # the notice's recipient
    rows: tuple[tuple[Recipient, str], ...]  # each reported recipient and its action
    headers_only: bool
    what: str  # the log's words: "sender non-delivery notification", ...


def qualify(rules: RewriteRules, address: str) -> str:
    """An address as cleanup would write it: ``postmaster`` becomes postmaster@$myorigin."""
    return internalize(rules.rewrite(scan(quote_822_local(address))))


def plan_failure(policy: Policy, entry: QueueEntry, rcpts: Sequence[Recipient]) -> list[Plan]:
    """The non-delivery notices for ``rcpts`` (≈ bounce_notify_service())."""
    rows = tuple((r, "failed") for r in rcpts)
    if policy.is_double_bounce(entry.sender):
        return []
    if not entry.sender:
        if not policy.classes & {"bounce", "2bounce"}:
            return []
        return [Plan("failure", True, policy.double_bounce, policy.twobounce_rcpt, rows, False,
                     "postmaster non-delivery notification")]
    plans = []
    told = tuple(row for row in rows if wants(row[0], "FAILURE"))
    if told:
        plans.append(Plan("failure", False, "", entry.sender, told, entry.ret.upper() == "HDRS",
                          "sender non-delivery notification"))
    if "bounce" in policy.classes:
        plans.append(Plan("failure", True, policy.double_bounce, policy.bounce_rcpt, rows, True,
                          "postmaster non-delivery notification"))
    return plans


def plan_delay(policy: Policy, entry: QueueEntry, rcpts: Sequence[Recipient]) -> list[Plan]:
    """The delay warnings for ``rcpts`` (≈ bounce_warn_service())."""
    rows = tuple((r, "delayed") for r in rcpts)
    if policy.is_double_bounce(entry.sender):
        return []
    if not entry.sender:
        if "delay" not in policy.classes:
            return []
        return [Plan("delay", True, policy.double_bounce, policy.delay_rcpt, rows, False,
                     "postmaster delay notification")]
    plans = []
    told = tuple(row for row in rows if wants(row[0], "DELAY"))
    if told:
        plans.append(Plan("delay", False, "", entry.sender, told, True,
                          "sender delay notification"))
    if "delay" in policy.classes:
        plans.append(Plan("delay", True, policy.double_bounce, policy.delay_rcpt, rows, True,
                          "postmaster delay notification"))
    return plans


def plan_success(
    policy: Policy, entry: QueueEntry, delivered: Sequence[tuple[Recipient, str]]
) -> list[Plan]:
    """The success notice for recipients delivered with NOTIFY=SUCCESS
    (≈ bounce_trace_service()): to the sender, or for a bounce to 2bounce_notice_recipient."""
    rows = tuple(row for row in delivered if wants(row[0], "SUCCESS"))
    if not rows or policy.is_double_bounce(entry.sender):
        return []
    if not entry.sender:
        if "2bounce" not in policy.classes:
            return []
        return [Plan("success", False, policy.double_bounce, policy.twobounce_rcpt, rows, True,
                     "sender delivery status notification")]
    return [Plan("success", False, "", entry.sender, rows, True,
                 "sender delivery status notification")]


def delay_due(cfg: Config, entry: QueueEntry, now: float) -> bool:
    """Is a delay warning due for this message (≈ cleanup's warn time and the qmgr's
    check)? Only with delay_warning_time > 0, once, and never for the null sender."""
    warn = int(cfg.time("delay_warning_time"))
    return (
        warn > 0 and bool(entry.sender) and not entry.warned
        and now >= entry.arrival_time + warn - 1
    )


def default_action(rcpt: Recipient) -> str:
    """The DSN action of a delivered recipient when the agent named none: ``relayed``
    to an SMTP or LMTP peer (Postfix's smtp and lmtp with lmtp_assume_final = no),
    ``delivered`` by a local agent."""
    return "relayed" if "[" in rcpt.relay else "delivered"


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub("?", text)


def row_for(rcpt: Recipient, action: str, kind: Kind) -> Row:
    """A recipient as the bounce log would hold it: the remote MTA and its words
    when a peer answered, the relay named for a success."""
    reason = _printable(rcpt.reason) or "(description unavailable)"
    mta = dtype = dtext = ""
    if kind == "success":
        relay = rcpt.relay
        if relay and relay != "none":
            if "[" in relay and _SMTP_REPLY.match(reason):
                mta, dtype, dtext = relay.split("[", 1)[0], "smtp", reason
            reason = f"delivery via {relay}: {reason}"
    else:
        said = _PEER_SAID.fullmatch(reason)
        if said is not None:
            mta, dtype, dtext = said.group(1), "smtp", said.group(2)
    address = quote_822_local(rcpt.address)
    orig = rcpt.orig_rcpt
    default = {"failure": "5.0.0", "delay": "4.0.0"}.get(kind, "2.0.0")
    return Row(
        address=_printable(address),
        action=action,
        status=rcpt.dsn or default,
        reason=reason,
        orig_addr=_printable(quote_822_local(orig)) if orig and orig.lower() != rcpt.address.lower()
        else "",
        dsn_orcpt=f"rfc822;{_printable(orig)}" if orig else "",
        mta=mta,
        dtype=dtype,
        dtext=dtext,
    )


class Bouncer:
    """Queues notices; ``cfg()`` gives the configuration in force (reloads apply)."""

    def __init__(self, cfg: Callable[[], Config], enqueue: Enqueue, content: Content,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.enqueue = enqueue
        self.content = content
        self.clock = clock

    async def failure(
        self, entry: QueueEntry, recipients: Iterable[Recipient] | None = None
    ) -> list[str]:
        """Non-delivery notices for ``recipients`` (default: every bounced or expired
        one); returns the new queue IDs. The caller records that they were sent."""
        rcpts = [r for r in entry.recipients if r.state in ("bounced", "expired")] \
            if recipients is None else list(recipients)
        return await self._send(entry, rcpts, plan_failure, _DISCARDED)

    async def delay(
        self, entry: QueueEntry, recipients: Iterable[Recipient] | None = None
    ) -> list[str]:
        """Delay warnings for ``recipients`` (default: every deferred one); the caller
        checks :func:`delay_due` first and sets ``entry.warned`` after."""
        rcpts = [r for r in entry.recipients if r.state == "deferred"] \
            if recipients is None else list(recipients)
        return await self._send(entry, rcpts, plan_delay, _DISCARDED)

    async def success(
        self, entry: QueueEntry, delivered: Sequence[tuple[Recipient, str]]
    ) -> list[str]:
        """A success notice for ``delivered`` (each recipient with its DSN action:
        delivered, relayed or expanded) where NOTIFY=SUCCESS asked for one."""
        policy = Policy.from_config(self.cfg())
        if policy.is_double_bounce(entry.sender):
            if any(wants(r, "SUCCESS") for r, _ in delivered):
                log.info("%s: not sending trace/success notification for double-bounce "
                         "message", entry.queue_id)
            return []
        if not entry.sender and "2bounce" not in policy.classes:
            if any(wants(r, "SUCCESS") for r, _ in delivered):
                log.info("%s: not sending trace/success notification for single-bounce "
                         "message", entry.queue_id)
            return []
        return await self._queue(entry, plan_success(policy, entry, delivered))

    async def _send(
        self, entry: QueueEntry, rcpts: list[Recipient],
        plan: Callable[[Policy, QueueEntry, Sequence[Recipient]], list[Plan]], discarded: str,
    ) -> list[str]:
        if not rcpts:
            return []
        policy = Policy.from_config(self.cfg())
        if policy.is_double_bounce(entry.sender):
            log.warning("%s: %s", entry.queue_id, discarded)
            return []
        return await self._queue(entry, plan(policy, entry, rcpts))

    async def _queue(self, entry: QueueEntry, plans: list[Plan]) -> list[str]:
        if not plans:
            return []
        cfg = self.cfg()
        content = await self.content(entry)
        ids = []
        for plan in plans:
            ids.append(await self._queue_one(cfg, entry, content, plan))
        return ids

    async def _queue_one(self, cfg: Config, entry: QueueEntry, content: bytes, plan: Plan) -> str:
        now = self.clock()
        style = style_of(cfg, content)
        template = TEMPLATES[plan.kind]
        report = Report(
            template=template,
            to=quote_822_local(plan.to),
            postmaster=plan.postmaster,
            rows=tuple(row_for(r, action, plan.kind) for r, action in plan.rows),
            headers_only=plan.headers_only,
            text=tuple(expand_text(template, cfg.get, {
                "delay_warning_time": int(cfg.time("delay_warning_time")),
                "maximal_queue_lifetime": style.maximal_queue_lifetime,
            }, cfg.bool("smtputf8_enable"))),
        )
        original = Original(
            queue_id=entry.queue_id,
            sender=quote_822_local(entry.sender) if entry.sender
            else f"{MAIL_DAEMON}@{style.myhostname}",
            arrival=entry.arrival_time,
            content=content,
            env_id=entry.env_id,
            smtputf8=entry.smtputf8,
            message_id=entry.message_id,
        )
        notice = QueueEntry(
            queue_id="",
            sender=plan.sender,
            recipients=[Recipient(address=plan.to, orig_rcpt=plan.to)],
            arrival_time=now,
            smtputf8=entry.smtputf8,
            bounce_of=entry.queue_id,
            client_name="localhost",
            client_addr="127.0.0.1",
            protocol="bounce",
        )

        def build(new_id: str) -> bytes:
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
            notice.message_id = f"<{stamp}.{new_id}@{style.myhostname}>"
            return compose(report, original, style, new_id, now)

        new_id = await self.enqueue(notice, build)
        cleanup_log.info("%s: message-id=%s", new_id, notice.message_id)
        log.info("%s: %s: %s", entry.queue_id, plan.what, new_id)
        kind = {"failure": "non_delivery"}.get(plan.kind, plan.kind)
        metrics.bounces_generated.labels(f"postmaster_{kind}" if plan.postmaster else kind).inc()
        return new_id


def style_of(cfg: Config, content: bytes) -> Style:
    """The configuration a report reads. Its MIME encoding is 8bit with
    smtputf8_enable (as Postfix 3.x), else 8bit for 8-bit content and none otherwise."""
    rules = RewriteRules.local(cfg)
    if cfg.bool("smtputf8_enable") or not content.isascii():
        encoding: str | None = "8bit"
    else:
        encoding = None
    return Style(
        myhostname=cfg.get("myhostname"),
        mail_name=cfg.get("mail_name"),
        mail_daemon=qualify(rules, MAIL_DAEMON),
        encoding=encoding,
        bounce_size_limit=cfg.int("bounce_size_limit"),
        maximal_queue_lifetime=int(cfg.time("maximal_queue_lifetime")),
        threaded=cfg.bool("enable_threaded_bounces"),
    )


__all__ = [
    "Bouncer", "Content", "Enqueue", "Plan", "Policy", "default_action", "delay_due",
    "plan_delay", "plan_failure", "plan_success", "row_for", "wants",
]
