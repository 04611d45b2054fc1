"""cleanup's address processing for one message (≈ cleanup_addr.c, cleanup_out_recipient.c).

:class:`Cleanup` is read once from the configuration; :meth:`Cleanup.begin`
gives a :class:`CleanupState` for one message, which every way into the
queue uses alike (smtpd, ``postbus sendmail``, bounces, forwarded mail):

* :meth:`CleanupState.sender`: the envelope sender in the local rewriting
  context (``user`` gets ``@$myorigin``), ``MAILER-DAEMON@$myorigin``
  becomes the null sender, then sender and common canonical maps and
  masquerading (envelope_sender class);
* :meth:`CleanupState.recipient`: the same for a recipient (an empty one
  is empty_address_recipient), then virtual alias expansion; each
  resulting recipient is queued once (duplicates dropped: with
  enable_original_recipient, only those that also share the original
  recipient and DSN attributes). The original address stays with each
  result (``Recipient.orig_rcpt``: the DSN's Original-Recipient and
  local delivery's X-Original-To);
* :meth:`CleanupState.header`: one address header rewritten
  (:mod:`postbus.cleanup.headers`);
* :meth:`CleanupState.inspect`: header_checks, mime_header_checks,
  nested_header_checks and body_checks over the content
  (:mod:`postbus.cleanup.checks`, :mod:`postbus.cleanup.mime`); BCC actions
  add recipients;
* :meth:`CleanupState.finish`: raises :class:`CleanupError` when anything
  failed or the content was rejected, so that nothing half-rewritten is
  queued, and :class:`MessageDiscarded` for a DISCARD action; a REDIRECT
  action replaces the recipients; a HOLD action is :attr:`CleanupState.hold`,
  a FILTER action :attr:`CleanupState.filter` (smtpd's restrictions may set
  all three first: the last FILTER and REDIRECT win).

:meth:`Cleanup.message` does all of it for a whole message from inside
the mail system (``postbus sendmail``, a bounce, a forwarded copy), and
gives back the content to queue once the queue ID is known.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from postbus.cleanup import mime
from postbus.cleanup.canonical import Canonical, Classes
from postbus.cleanup.checks import ContentChecks, Origin, Verdict
from postbus.cleanup.content import Headers, header_lines, join, missing_headers, split_headers
from postbus.cleanup.headers import ADDRESS_HEADERS, HeaderRewriter, header_opts, output_lines
from postbus.cleanup.masquerade import Masquerade
from postbus.cleanup.status import CleanupError, MessageDiscarded, Stat, Status
from postbus.cleanup.virtual import VirtualAliases
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from postbus.resolve import Resolver
from postbus.rewrite import RewriteRules

Context = Literal["local", "remote"]

#: receive_override_options words (≈ input_transp.c); no_milters turns smtpd_milters
#: and non_smtpd_milters off
OVERRIDE_OPTIONS = frozenset({"no_unknown_recipient_checks", "no_address_mappings",
                              "no_header_body_checks", "no_milters"})


def receive_overrides(cfg: Config) -> frozenset[str]:
    """receive_override_options, checked (≈ input_transp_mask())."""
    words = frozenset(w.lower() for w in cfg.list("receive_override_options"))
    unknown = sorted(words - OVERRIDE_OPTIONS)
    if unknown:
        raise ConfigError(f'unknown receive_override_options value "{unknown[0]}"',
                          parameter="receive_override_options")
    return words

#: duplicate_filter_limit's default: recipients remembered for duplicate elimination
DUPLICATE_FILTER_LIMIT = 1000


class Cleanup:
    """The rewriting configuration shared by every message."""

    def __init__(self, cfg: Config, resolver: Resolver | None = None) -> None:
        self.resolver = resolver if resolver is not None else Resolver(cfg)
        self.rules = RewriteRules.local(cfg)
        self.canonical = Canonical(cfg, self.resolver)
        self.masquerade = Masquerade(cfg)
        self.virtual = VirtualAliases(cfg, self.resolver)
        self.enable_orcpt = cfg.bool("enable_original_recipient")
        self.empty_address = cfg.get("empty_address_recipient")
        self.mailer_daemon = self.rules.internal("MAILER-DAEMON").casefold()
        self.myhostname = cfg.get("myhostname")
        self.header_size_limit = cfg.size("header_size_limit")
        self.long_queue_ids = cfg.bool("enable_long_queue_ids")
        # receive_override_options = no_address_mappings, for smtpd and sendmail (pickup)
        overrides = receive_overrides(cfg)
        self.mapping = "no_address_mappings" not in overrides
        # content_filter: what smtpd and sendmail (pickup) put on every message they
        # queue; a re-injection listener has "-o content_filter=" (≈ REC_TYPE_FILT)
        self.content_filter = cfg.get("content_filter").strip()
        # header/body checks: for smtpd and sendmail unless receive_override_options
        # says no_header_body_checks; never for mail from inside (internal_mail_filter_classes)
        self.checks = ContentChecks(cfg)
        self.filter = bool(self.checks) and "no_header_body_checks" not in overrides
        self.drop = frozenset(w.lower() for w in cfg.list("message_drop_headers"))
        # the headers cleanup may change, to leave a block without any alone quickly
        names = "|".join(re.escape(n) for n in sorted(self.drop))
        self._touched = re.compile(rf"^(?:{names})[ \t]*:".encode(), re.M | re.I) \
            if names else None
        limit = cfg.int("header_address_token_limit")
        remote = RewriteRules.remote(cfg)
        self.headers: dict[Context, HeaderRewriter] = {
            "local": HeaderRewriter(self.rules, self.canonical, self.masquerade, limit)}
        if remote is not None:
            self.headers["remote"] = HeaderRewriter(remote, self.canonical, self.masquerade,
                                                    limit)

    def header_context(self, local: bool) -> Context | None:
        """The header rewriting context of a client in local_header_rewrite_clients
        or not: None when remote_header_rewrite_domain is empty (≈ cleanup_envelope.c)."""
        if local:
            return "local"
        return "remote" if "remote" in self.headers else None

    def begin(self, *, queue_id: str = "NOQUEUE", context: Context | None = "local",
              mapping: bool = True) -> CleanupState:
        """A new message; ``mapping`` False skips canonical, masquerade and virtual
        (mail from inside the mail system always maps; smtpd and sendmail pass
        :attr:`mapping`, which receive_override_options may turn off)."""
        return CleanupState(self, Status(queue_id), context, mapping)

    async def message(self, entry: QueueEntry, content: bytes, *,
                      context: Context | None = "local", mapping: bool = True,
                      filter: bool = False, origin: Origin | None = None,
                      bounce: bool = False) -> Callable[[str], bytes]:
        """Rewrite ``entry`` (sender; recipients, each keeping its orig_rcpt and NOTIFY)
        and the header block of ``content`` (CRLF lines); return the function that
        makes the content to queue once the queue ID is drawn (missing headers
        added, ``entry.message_id`` set). Raises CleanupError: then queue nothing.

        ``filter``: run header and body checks (mail from ``postbus sendmail``;
        ``entry.queue_id`` is then the ID the log lines name and enqueue should
        try first); a HOLD puts ``entry.queue`` on hold, a DISCARD raises
        MessageDiscarded."""
        state = self.begin(queue_id=entry.queue_id or "NOQUEUE", context=context,
                           mapping=mapping)
        entry.sender = await state.sender(entry.sender)
        for rcpt in entry.recipients:
            await state.recipient(rcpt.address, orcpt=rcpt.orig_rcpt, notify=rcpt.notify)
        if filter and self.checks:
            origin = origin or Origin()
            origin.queue_id = state.status.queue_id
            origin.sender = entry.sender
            origin.recipient = state.last_recipient
            _, content = await state.inspect(content, origin)
        headers = split_headers(content, self.header_size_limit)
        headers.block = await state.header_block(headers.block, self.header_size_limit)
        try:
            state.finish()
        except CleanupError as exc:
            if not bounce or exc.stat != Stat.CONT:
                raise
            dsn, _, text = (exc.reason or "5.7.1 message content rejected").partition(" ")
            for rcpt in state.recipients:
                rcpt.state, rcpt.dsn, rcpt.reason, rcpt.relay = "bounced", dsn, text, "none"
        if state.hold:
            entry.queue = "hold"
        entry.filter = state.filter or entry.filter  # a FILTER action over content_filter
        entry.recipients = state.recipients
        arrival = entry.arrival_time or time.time()
        return _Builder(self, entry, headers, arrival)


@dataclass
class _Builder:
    """The content of a cleaned message, made when its queue ID is known."""

    cleanup: Cleanup
    entry: QueueEntry
    headers: Headers
    arrival: float

    def __call__(self, queue_id: str) -> bytes:
        added, self.entry.message_id = missing_headers(
            self.headers, self.entry.sender, queue_id, myhostname=self.cleanup.myhostname,
            arrival=self.arrival, long_queue_ids=self.cleanup.long_queue_ids)
        return join(self.headers, added)


class CleanupState:
    """One message going through cleanup."""

    def __init__(self, cleanup: Cleanup, status: Status, context: Context | None,
                 mapping: bool) -> None:
        self.cleanup = cleanup
        self.status = status
        self.context = context
        self.mapping = mapping
        self.recipients: list[Recipient] = []
        self._dups: set[tuple[str, ...]] = set()
        self.verdict: Verdict | None = None
        self.last_recipient: str | None = None  # the to=<> of content log lines
        # what smtpd's restrictions asked for (HOLD, FILTER, REDIRECT), set before
        # finish(); header and body checks' own FILTER or REDIRECT override them
        self.hold = False  # a HOLD action: queue the message on hold
        self.filter = ""  # content_filter's transport:destination for this message, if any
        self.redirect = ""

    async def sender(self, address: str) -> str:
        """The envelope sender as queued (≈ cleanup_addr_sender())."""
        c = self.cleanup
        clean = c.rules.internal(address)
        if clean.casefold().startswith("mailer-daemon@") and clean.casefold() == c.mailer_daemon:
            clean = ""
        if self.mapping:
            if c.canonical:
                clean = await c.canonical.internal(self.status, clean, Classes.ENV_FROM)
            if c.masquerade.applies(Classes.ENV_FROM):
                clean = await c.masquerade.internal(self.status, clean)
        return clean

    async def recipient(self, address: str, *, orcpt: str = "", notify: str = "") -> None:
        """Add an envelope recipient, rewritten and expanded
        (≈ cleanup_addr_recipient() and cleanup_out_recipient())."""
        c = self.cleanup
        clean = c.rules.internal(address or c.empty_address)
        if self.mapping:
            if c.canonical:
                clean = await c.canonical.internal(self.status, clean, Classes.ENV_RCPT)
            if c.masquerade.applies(Classes.ENV_RCPT):
                clean = await c.masquerade.internal(self.status, clean)
        self.last_recipient = clean  # ≈ state->recip: before virtual alias expansion
        # duplicates are judged by the DSN original recipient (the client's ORCPT, else
        # the cleaned address), NOTIFY and the address as received, as Postfix does
        dsn_orcpt = orcpt or clean
        original = orcpt or address  # what the DSN and X-Original-To name
        if not self.mapping or not c.virtual:
            self._add((dsn_orcpt, notify, address), original, notify, clean)
            return
        expanded = await c.virtual.expand(self.status, clean)
        if "SUCCESS" in notify.upper().split(",") and (len(expanded) > 1
                                                       or expanded[0] != clean):
            # RFC 3461 option (b): the expansion gets NOTIFY without SUCCESS
            kept = [w for w in notify.split(",") if w.upper() != "SUCCESS"]
            notify = ",".join(kept) or "NEVER"
        for each in expanded:
            self._add((dsn_orcpt, notify, address), original, notify, each)

    def _add(self, attrs: tuple[str, str, str], original: str, notify: str,
             address: str) -> None:
        """Queue a recipient unless it is a duplicate (≈ been_here(), folded)."""
        fields = (*attrs, address) if self.cleanup.enable_orcpt else (address,)
        key = tuple(k.casefold() for k in fields)
        if key in self._dups:
            return
        if len(self._dups) < DUPLICATE_FILTER_LIMIT:
            self._dups.add(key)
        self.recipients.append(Recipient(address, orig_rcpt=original, notify=notify))

    async def header(self, header: str) -> str | None:
        """An address header with its addresses rewritten, None when it is not one or
        nothing changed. ``header`` is ``Name: value`` with continuation lines
        joined by ``\\n``."""
        if self.context is None:
            return None
        opts = header_opts(header)
        if opts is None or not (opts.sender or opts.recipient):
            return None
        return await self.cleanup.headers[self.context].rewrite(
            self.status, header, opts, self.mapping)

    async def header_block(self, block: bytes, size_limit: int) -> bytes:
        """A CRLF header block as cleanup passes it on: message_drop_headers removed
        (Bcc:, Return-Path:, ...), address headers rewritten; other headers, and
        address headers that do not change, stay byte for byte."""
        drop = self.cleanup.drop
        touched = self.cleanup._touched
        if self.context is None and (touched is None or not touched.search(block)):
            return block
        out: list[bytes] = []
        changed = False
        for raw in header_lines(block):
            name = raw[: raw.find(b":")].rstrip(b" \t").lower()
            text = name.decode("ascii", "replace")
            if text in drop:
                changed = True
                continue
            new = None
            if self.context is not None and name in ADDRESS_HEADERS:
                header = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
                new = await self.header(header.removesuffix("\n"))
            if new is None:
                out.append(raw)
            else:
                changed = True
                lines = output_lines(new, size_limit)
                out.append("".join(f"{line}\r\n" for line in lines).encode(
                    "utf-8", "surrogateescape"))
        return b"".join(out) if changed else block

    async def inspect(self, content: bytes, origin: Origin,
                      top: bytes = b"") -> tuple[bytes, bytes]:
        """Header and body checks over ``top`` (headers the receiver adds, smtpd's
        Received:) and ``content``: both as the actions left them. BCC actions add
        their recipients now; the rest of the verdict is :meth:`finish`'s."""
        insp = self.cleanup.checks.begin(origin)
        changed = await mime.inspect(insp, top + content, len(top))
        self.verdict = insp.finish()
        if not self.verdict.rejected and not self.verdict.discard:
            for bcc in self.verdict.bcc:
                await self.recipient(bcc, notify="NEVER")
        return changed if changed is not None else (top, content)

    def finish(self) -> None:
        """Raise CleanupError when the message must not be queued, MessageDiscarded
        when it must seem queued but not be; apply REDIRECT, and take FILTER and
        HOLD into :attr:`filter` and :attr:`hold`."""
        self.status.check()
        v = self.verdict
        if v is not None:
            if v.reason:
                raise CleanupError(Stat.DEFER if v.defer else Stat.CONT, v.reason)
            if v.write_error:
                raise CleanupError(Stat.WRITE)
            if v.discard:
                raise MessageDiscarded(self.status.queue_id)
            self.hold = self.hold or v.hold
            self.filter = v.filter or self.filter
            self.redirect = v.redirect or self.redirect
        if self.redirect:
            # ≈ the qmgr's redirect: every recipient goes to the one address, each
            # keeping its original recipient (DSN Original-Recipient, X-Original-To)
            seen: set[str] = set()
            kept: list[Recipient] = []
            for rcpt in self.recipients:
                if rcpt.orig_rcpt.casefold() in seen:
                    continue
                seen.add(rcpt.orig_rcpt.casefold())
                kept.append(Recipient(self.redirect, orig_rcpt=rcpt.orig_rcpt,
                                      notify=rcpt.notify))
            self.recipients = kept

