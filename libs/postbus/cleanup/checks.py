"""header_checks, mime_header_checks, nested_header_checks and body_checks
(≈ cleanup_message.c's cleanup_act(), cleanup_header_callback(), cleanup_body_callback()).

:class:`ContentChecks` is read once from the configuration; :meth:`ContentChecks.begin`
gives an :class:`Inspection` for one message, which :mod:`postbus.cleanup.mime`
feeds with every logical header (with its class: primary, MIME part, or a
message/rfc822 attachment's) and every body line. A table's result is an
action of header_checks(5), carried out as Postfix does, with Postfix's log
lines (``QID: reject: header Subject: ... from client[addr]; from=<...>
to=<...> proto=ESMTP helo=<...>: 5.7.1 text``).

What the actions leave for the caller is in :class:`Verdict`: a rejection
(``550`` or, for a 4.x.x text, ``451``), DISCARD, HOLD, FILTER (the last
``transport:destination`` wins, as content_filter for this message),
REDIRECT and BCC recipients.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Final

from postbus import metrics
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry
from postbus.params import PARAMS

log = logging.getLogger("postbus.cleanup")

PRIMARY, MULTIPART, NESTED = "header_checks", "mime_header_checks", "nested_header_checks"
BODY = "body_checks"
#: the headers Postfix checks with mime_header_checks wherever they are (HDR_OPT_MIME)
MIME_HEADERS: Final = frozenset({
    "content-description", "content-disposition", "content-id",
    "content-transfer-encoding", "content-type", "mime-version"})
CONTENT_REJECTED: Final = "5.7.1 message content rejected"
ACTIONS: Final = frozenset({
    "REJECT", "WARN", "INFO", "FILTER", "PASS", "DISCARD", "HOLD", "PREPEND", "REPLACE",
    "REDIRECT", "BCC", "STRIP", "IGNORE", "DUNNO", "OK"})
_DSN = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")
_HEADER = re.compile(r"^[!-9;-~]+[ \t]*:")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")

#: an action's answer to the caller: keep the text, drop it, or put this in its place
DROP: Final = None


def dsn_prepend(default: str, text: str) -> str:
    """``text`` with ``default`` in front unless it starts with its own status (≈ dsn_prepend())."""
    return text if _DSN.match(text) else f"{default} {text}"


def printable(text: str) -> str:
    """As Postfix's logger writes a text: control characters become ``?``."""
    return _UNPRINTABLE.sub("?", text)


@dataclass
class Verdict:
    """What the actions decided for the message as a whole."""

    reason: str = ""  # REJECT: "5.7.1 text" (or 4.x.x: a deferral)
    defer: bool = False  # the reason is a 4.x.x one, or a table could not answer
    write_error: bool = False  # a table lookup failed: "queue file write error"
    discard: bool = False
    hold: bool = False
    redirect: str = ""
    filter: str = ""  # FILTER transport:destination, the last one found
    bcc: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return bool(self.reason) or self.write_error


@dataclass
class Origin:
    """What a content log line names (≈ MAIL_ATTR_LOG_ORIGIN and friends)."""

    queue_id: str = "NOQUEUE"
    origin: str = "local"  # client[addr] for smtpd
    sender: str | None = None
    recipient: str | None = None  # the last envelope recipient
    protocol: str = ""
    helo: str = ""


class ContentChecks:
    """The check tables and limits shared by every message.

    ``prefix`` "smtp_" or "lmtp_" reads a delivery agent's tables
    (smtp_header_checks and the rest, :mod:`postbus.hbc`): no size limit on
    body checks."""

    def __init__(self, cfg: Config, prefix: str = "") -> None:
        self.prefix = prefix
        self.tables: dict[str, Maps] = {}
        opened: dict[str, Maps] = {}  # mime_ and nested_header_checks are $header_checks
        for name in (PRIMARY, MULTIPART, NESTED, BODY):
            param = prefix + name
            if param not in PARAMS:  # a name Postfix does not have: nothing to read
                continue
            value = cfg.get(param)
            if value.strip():
                maps = opened.get(value.strip())
                if maps is None:
                    maps = opened[value.strip()] = open_maps(value, param)
                self.tables[name] = maps
        self.body_limit = 0 if prefix else cfg.size("body_checks_size_limit")
        self.header_limit = cfg.size("header_size_limit")
        self.line_limit = max(cfg.int("line_length_limit"), 1)
        self.nesting_limit = cfg.int("mime_nesting_limit")
        self.boundary_limit = max(cfg.int("mime_boundary_length_limit"), 1)
        self.mime = not cfg.bool("disable_mime_input_processing")
        # MIME_OPT_REPORT_NESTING: only cleanup, and only with some header checks
        self.report_nesting = not prefix and any(
            n in self.tables for n in (PRIMARY, MULTIPART, NESTED))

    def __bool__(self) -> bool:
        return bool(self.tables)

    def begin(self, origin: Origin) -> Inspection:
        return Inspection(self, origin)


class Inspection:
    """The actions taken on one message (≈ the CLEANUP_STATE fields cleanup_act() sets)."""

    def __init__(self, checks: ContentChecks, origin: Origin) -> None:
        self.checks = checks
        self.origin = origin
        self.verdict = Verdict()
        self.mime_reason = ""

    def finish(self) -> Verdict:
        """The verdict once all the content was read."""
        if self.mime_reason and not self.verdict.reason:
            self.verdict.reason = self.mime_reason
        return self.verdict

    @property
    def out_ok(self) -> bool:
        """CLEANUP_OUT_OK(): nothing rejected, nothing discarded."""
        v = self.verdict
        return not (v.rejected or v.discard)

    def _log(self, action: str, context: str, content: str, text: str) -> None:
        o = self.origin
        line = f"{o.queue_id}: {action}: {context} {content[:200]} from {o.origin};"
        if o.sender is not None:
            line += f" from=<{o.sender}>"
        if o.recipient is not None:
            line += f" to=<{o.recipient}>"
        if o.protocol:
            line += f" proto={o.protocol}"
        if o.helo:
            line += f" helo=<{o.helo}>"
        if text:
            line += f": {text}"
        log.info("%s", printable(line))

    async def header(self, cls: str, header: str) -> tuple[str | None, list[str]]:
        """One logical header (continuation lines joined by ``\\n``) of class ``cls``:
        (the header to write, or None to drop it; headers to write before it)."""
        name = header[: header.find(":")].rstrip(" \t").lower()
        if name in MIME_HEADERS:
            cls = MULTIPART
        maps = self.checks.tables.get(cls)
        if maps is None:
            return header, []
        return await self._find(maps, self.checks.prefix + cls, "header", header)

    async def body(self, line: str, offset: int) -> tuple[str | None, list[str]]:
        """One body line (or line_length_limit piece of one) at ``offset`` in its part."""
        maps = self.checks.tables.get(BODY)
        limit = self.checks.body_limit
        if maps is None or not self.out_ok or (limit and offset >= limit):
            return line, []
        return await self._find(maps, self.checks.prefix + BODY, "body", line)

    async def _find(self, maps: Maps, title: str, context: str,
                    text: str) -> tuple[str | None, list[str]]:
        try:
            value = await maps.find(text[: self.checks.header_limit])
        except TableRetry:
            if not self.checks.prefix:
                log.warning("%s: %s map lookup problem -- message not accepted, "
                            "try again later", self.origin.queue_id, title)
            self.verdict.write_error = True
            return text, []
        if value is None:
            return text, []
        verb = value.split(None, 1)[0].upper() if value.strip() else ""
        metrics.content_check_actions.labels(title, verb if verb in ACTIONS else "other").inc()
        return self.act(context, text, value, title)

    def act(self, context: str, buf: str, value: str,
            map_class: str) -> tuple[str | None, list[str]]:
        """One action (≈ cleanup_act()): (what to write in place of ``buf``, what before it)."""
        command = value.split(None, 1)[0] if value.strip() else ""
        text = value[len(command):].lstrip() if command else ""
        if value[:1].isspace():
            command, text = "", value.strip()
        verb = command.upper()
        v = self.verdict
        if verb == "REJECT":
            reason = dsn_prepend("5.7.1", text) if text else CONTENT_REJECTED
            if reason[:1] not in ("4", "5"):
                log.warning("bad DSN action in %s -- need 4.x.x or 5.x.x", text)
                reason = "4" + reason[1:]
            v.reason, v.defer = reason, reason.startswith("4")
            self._log("reject", context, buf, reason)
        elif verb in ("WARN", "INFO"):
            self._log("warning" if verb == "WARN" else "info", context, buf, text)
        elif verb == "FILTER":
            if not text:
                log.warning("missing FILTER command argument in %s map", map_class)
            elif ":" not in text:
                log.warning("bad FILTER command %s in %s -- need transport:destination",
                            text, map_class)
            else:
                v.filter = text
                self._log("filter", context, buf, text)
        elif verb == "PASS":
            self._log("pass", context, buf, text)
        elif verb == "DISCARD":
            self._log("discard", context, buf, text)
            v.discard = True
        elif verb == "HOLD":
            if not (v.hold or v.discard):
                self._log("hold", context, buf, text)
                v.hold = True
        elif verb == "PREPEND":
            if not text:
                log.warning("PREPEND action without text in %s map", map_class)
            elif context == "header" and not _HEADER.match(text):
                log.warning('bad PREPEND header text "%s" in %s map -- '
                            'need "headername: headervalue"', text, map_class)
            else:
                self._log("prepend", context, buf, text)
                return buf, [text]
        elif verb == "REPLACE":
            if not text:
                log.warning("REPLACE action without text in %s map", map_class)
            elif context == "header" and not _HEADER.match(text):
                log.warning('bad REPLACE header text "%s" in %s map -- '
                            'need "headername: headervalue"', text, map_class)
            else:
                self._log("replace", context, buf, text)
                return text, []
        elif verb == "REDIRECT":
            if "@" not in text:
                log.warning('bad REDIRECT target "%s" in %s map -- need user@domain',
                            text, map_class)
            else:
                v.redirect = text
                self._log("redirect", context, buf, text)
        elif verb == "BCC":
            if "@" not in text:
                log.warning('bad BCC address "%s" in %s map -- need user@domain',
                            text, map_class)
            else:
                v.bcc.append(text)
                self._log("bcc", context, buf, text)
        elif verb == "STRIP":
            self._log("strip", context, buf, text)
            return DROP, []
        elif verb == "IGNORE":
            return DROP, []
        elif verb not in ("DUNNO", "OK"):
            log.warning("unknown command in %s map: %s", map_class, value)
        return buf, []

    def mime_error(self, detail: str, text: str) -> None:
        """A MIME structure error, rejected once the content is read
        (≈ cleanup_mime_error_callback(), and the end of cleanup_message_headerbody())."""
        o = self.origin
        self.mime_reason = self.mime_reason or f"5.6.0 {detail}"
        log.info("%s", printable(
            f"{o.queue_id}: reject: mime-error {detail}: {text[:100]} from {o.origin};"
            f" from=<{o.sender or ''}> to=<{o.recipient or 'unknown'}>"))
