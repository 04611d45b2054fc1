"""Queueing the notices :mod:`qmgr.notices` decides on (≈ bounce(8)'s services
posting through post_mail).

:class:`Bouncer` is what the queue core calls: ``failure``, ``delay`` and
``success`` take a queue entry (and the recipients to report), plan the
notices, turn each reported recipient into the lines a bounce log would
hold, compose the report and queue it through the injected ``enqueue``
function, so this module knows nothing of how the queue stores messages.
Each notice is logged as Postfix logs it (``QID: sender non-delivery
notification: NEWID``) and counted in postbus_bounces_generated.

Its words are those of bounce_template_file, read once per configuration
(as Postfix's bounce daemon reads it when it starts): a file that cannot
be used stops the qmgr at start; after a reload it is reported and the
last good templates are kept.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from postbus import metrics
from postbus.bounce_template import (
    DEFAULTS,
    MAIL_DAEMON,
    BounceTemplate,
    Kind,
    TemplateError,
    load_file,
)
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from postbus.rewrite import RewriteRules
from postbus.tok822 import quote_822_local
from qmgr.dsn_report import Original, Report, Row, Style, compose
from qmgr.notices import Plan, Policy, plan_delay, plan_failure, plan_success, qualify_header, wants

__all__ = ["Bouncer", "Content", "Enqueue", "Templates", "row_for", "style_of", "templates_of"]

log = logging.getLogger("postbus.bounce")
cleanup_log = logging.getLogger("postbus.cleanup")

#: ``enqueue(entry, build)``: queue a new message whose content is
#: ``build(queue_id)``; returns the queue ID.
Enqueue = Callable[[QueueEntry, Callable[[str], bytes]], Awaitable[str]]
#: ``content(entry)``: the queued content of a message.
Content = Callable[[QueueEntry], Awaitable[bytes]]
Templates = dict[Kind, BounceTemplate]

_PEER_SAID = re.compile(
    r"host (\S+?)\[[^\]]*\] (?:said|refused to talk to me): (.*?)(?: \(in reply to [^)]*\))?",
    re.S,
)
_SMTP_REPLY = re.compile(r"[2-5]\d\d[ -]")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


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
        self._templates: Templates | None = None
        self._templates_of: Config | None = None

    def templates(self, cfg: Config) -> Templates:
        """The templates ``cfg`` names; ConfigError when there are no good ones yet."""
        if cfg is not self._templates_of or self._templates is None:
            try:
                templates = templates_of(cfg)
            except (TemplateError, ConfigError) as exc:
                if self._templates is None:
                    raise ConfigError(str(exc), parameter="bounce_template_file") from None
                log.error("%s; keeping the last good notice templates", exc)
                templates = self._templates
            self._templates, self._templates_of = templates, cfg
        return self._templates

    def reload(self, cfg: Config) -> None:
        """Read the templates of a new configuration now, so that errors show now."""
        self.templates(cfg)

    async def failure(
        self, entry: QueueEntry, recipients: Iterable[Recipient] | None = None,
        to: str | None = None,
    ) -> list[str]:
        """Non-delivery notices for ``recipients`` (default: every bounced or expired
        one); returns the new queue IDs. The caller records that they were sent.
        ``to``: tell this address instead of the message's sender (an owner- alias)."""
        rcpts = [r for r in entry.recipients if r.state in ("bounced", "expired")] \
            if recipients is None else list(recipients)
        return await self._send(entry, rcpts, lambda p, e, r: plan_failure(p, e, r, to), to)

    async def delay(
        self, entry: QueueEntry, recipients: Iterable[Recipient] | None = None
    ) -> list[str]:
        """Delay warnings for ``recipients`` (default: every deferred one); the caller
        checks :func:`qmgr.notices.delay_due` first and sets ``entry.warned`` after."""
        rcpts = [r for r in entry.recipients if r.state == "deferred"] \
            if recipients is None else list(recipients)
        return await self._send(entry, rcpts, plan_delay)

    async def success(
        self, entry: QueueEntry, delivered: Sequence[tuple[Recipient, str]]
    ) -> list[str]:
        """A success notice for ``delivered`` (each recipient with its DSN action:
        delivered, relayed or expanded) where NOTIFY=SUCCESS asked for one."""
        cfg = self.cfg()
        policy = Policy.from_config(cfg)
        asked = any(wants(r, "SUCCESS") for r, _ in delivered)
        if policy.is_double_bounce(entry.sender) or (
            not entry.sender and "2bounce" not in policy.classes
        ):
            if asked:
                log.info("%s: not sending trace/success notification for %s message",
                         entry.queue_id, "single-bounce" if not entry.sender else "double-bounce")
            return []
        return await self._queue(cfg, entry, plan_success(policy, entry, delivered))

    async def _send(
        self, entry: QueueEntry, rcpts: list[Recipient],
        plan: Callable[[Policy, QueueEntry, Sequence[Recipient]], list[Plan]],
        to: str | None = None,
    ) -> list[str]:
        if not rcpts:
            return []
        cfg = self.cfg()
        policy = Policy.from_config(cfg)
        if policy.is_double_bounce(entry.sender if to is None else to):
            log.warning("%s: undeliverable postmaster notification discarded", entry.queue_id)
            return []
        return await self._queue(cfg, entry, plan(policy, entry, rcpts))

    async def _queue(self, cfg: Config, entry: QueueEntry, plans: list[Plan]) -> list[str]:
        """Queue each notice. A postmaster copy of a notice to a sender is not
        critical: if it cannot be queued, that is a warning, as in Postfix."""
        if not plans:
            return []
        content = await self.content(entry)
        ids = []
        for plan in plans:
            try:
                ids.append(await self._queue_one(cfg, entry, content, plan))
            except Exception:
                if not (plan.postmaster and entry.sender):
                    raise
                log.warning("%s: postmaster notice failed while %s %s", entry.queue_id,
                            "bouncing to" if plan.kind == "failure" else "warning", entry.sender)
        return ids

    async def _queue_one(self, cfg: Config, entry: QueueEntry, content: bytes, plan: Plan) -> str:
        now = self.clock()
        style = style_of(cfg, content)
        template = self.templates(cfg)[plan.kind]
        try:
            text = expand(template, cfg)
        except TemplateError as exc:  # the last good templates, in a new configuration
            log.error("%s; using the built-in %s template", exc, plan.kind)
            template = DEFAULTS[plan.kind]
            text = expand(template, cfg)
        report = Report(
            template=template,
            sender=tuple(qualify_header(RewriteRules.local(cfg), template.sender)),
            to=quote_822_local(plan.to),
            postmaster=plan.postmaster,
            rows=tuple(row_for(r, action, plan.kind) for r, action in plan.rows),
            headers_only=plan.headers_only,
            text=tuple(text),
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


def templates_of(cfg: Config) -> Templates:
    """bounce_template_file's templates (the built-in ones when it is empty), each
    expanded once so that an error shows when they are read, not at a notice."""
    templates = load_file(cfg.get("bounce_template_file"), log.warning)
    for template in templates.values():
        expand(template, cfg, warn=lambda text: None)
    return templates


def expand(template: BounceTemplate, cfg: Config,
           warn: Callable[[str], None] = log.warning) -> list[str]:
    """A template's text with this configuration's values."""

    def lookup(name: str) -> str | None:
        return None if cfg.lookup(name) is None else cfg.get(name)

    return template.expand(lookup, warn, cfg.bool("smtputf8_enable"))


def style_of(cfg: Config, content: bytes) -> Style:
    """The configuration a report reads. Its MIME encoding is 8bit with
    smtputf8_enable (as Postfix 3.x), else 8bit for 8-bit content and none otherwise."""
    if cfg.bool("smtputf8_enable") or not content.isascii():
        encoding: str | None = "8bit"
    else:
        encoding = None
    return Style(
        myhostname=cfg.get("myhostname"),
        mail_name=cfg.get("mail_name"),
        encoding=encoding,
        bounce_size_limit=cfg.int("bounce_size_limit"),
        maximal_queue_lifetime=int(cfg.time("maximal_queue_lifetime")),
        threaded=cfg.bool("enable_threaded_bounces"),
    )
