"""Who is told what about a message's delivery (≈ bounce(8)'s notify, warn and
trace services, and the qmgr's decision to call them).

Three notices, each sent by the qmgr at the end of a delivery attempt:

* :meth:`Bouncer.failure`: recipients that bounced or expired. The sender
  (or the owner- alias that local(8) named for a recipient: ``bounce_to``)
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

This module decides; :mod:`qmgr.bouncer` queues what it decides, and
:mod:`qmgr.dsn_report` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postbus import tok822_tree
from postbus.bounce_template import Kind
from postbus.cleanup.headers import fold
from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from postbus.rewrite import RewriteRules
from postbus.tok822 import internalize, quote_822_local, scan

__all__ = [
    "Plan", "Policy", "default_action", "delay_due", "plan_delay", "plan_failure",
    "plan_success", "qualify", "qualify_header", "wants",
]


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

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        rules = RewriteRules.local(cfg)
        return cls(
            classes=frozenset(w.lower() for w in cfg.list("notify_classes")),
            bounce_rcpt=qualify(rules, cfg.get("bounce_notice_recipient")),
            twobounce_rcpt=qualify(rules, cfg.get("2bounce_notice_recipient")),
            delay_rcpt=qualify(rules, cfg.get("delay_notice_recipient")),
            double_bounce=f"{cfg.get('double_bounce_sender')}@{cfg.get('myhostname')}",
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


def qualify_header(rules: RewriteRules, value: str) -> list[str]:
    """A notice's ``From:`` header as cleanup writes it for mail from inside the
    mail system (local context): ``Mail Delivery System <MAILER-DAEMON>`` becomes
    ``Mail Delivery System <MAILER-DAEMON@$myorigin>``; its lines, without line ends."""
    tree = tok822_tree.parse(value)
    changed = False
    for addr in tok822_tree.addresses(tree):
        text = tok822_tree.externalize(addr.head)
        new = rules.external(text)
        if new != text:
            changed = True
            tok822_tree.replace_addr(addr, new)
    header = "From: " + (tok822_tree.externalize(tree, tok822_tree.HEAD) if changed else value)
    lines = fold(header).split("\n")
    return lines[:1] + [line if line[:1] in (" ", "\t") else "\t" + line for line in lines[1:]]


def plan_failure(
    policy: Policy, entry: QueueEntry, rcpts: Sequence[Recipient], sender: str | None = None
) -> list[Plan]:
    """The non-delivery notices for ``rcpts`` (≈ bounce_notify_service()); ``sender``:
    the address told instead of the message's sender (an owner- alias, ≈
    bounce_one_service(), whose rules are the same)."""
    rows = tuple((r, "failed") for r in rcpts)
    sender = entry.sender if sender is None else sender
    if policy.is_double_bounce(sender):
        return []
    if not sender:
        if not policy.classes & {"bounce", "2bounce"}:
            return []
        return [Plan("failure", True, policy.double_bounce, policy.twobounce_rcpt, rows, False,
                     "postmaster non-delivery notification")]
    plans = []
    told = tuple(row for row in rows if wants(row[0], "FAILURE"))
    if told:
        plans.append(Plan("failure", False, "", sender, told, entry.ret.upper() == "HDRS",
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
