"""The delivery agents' header and body checks (≈ header_body_checks.c and the
call-backs smtp_proto.c gives it): smtp_header_checks, smtp_mime_header_checks,
smtp_nested_header_checks, smtp_body_checks (lmtp_* for LMTP).

They are "restricted" header_checks(5) tables: only the actions that leave the
delivery time and destination alone are there (WARN, INFO, REPLACE, PREPEND,
STRIP, IGNORE, DUNNO, OK); any other is logged as an unsupported command and
does nothing. Log lines are ``QID: action: header Subject: ...: text``, without
the client, as the smtp client writes them. The content is walked as cleanup
walks it (:mod:`postbus.cleanup.mime`). A table that cannot answer defers the
delivery.
"""

from __future__ import annotations

import logging

from postbus.cleanup import mime
from postbus.cleanup.checks import _HEADER, DROP, ContentChecks, Inspection, Origin, printable
from postbus.config.loader import Config

log = logging.getLogger("postbus.delivery")


class ChecksUnavailable(Exception):
    """A check table could not answer: the delivery is deferred."""


class DeliveryInspection(Inspection):
    """One delivery's checks: the restricted actions, the smtp client's log lines."""

    def _log(self, action: str, context: str, content: str, text: str) -> None:
        line = f"{self.origin.queue_id}: {action}: {context} {content[:200]}"
        log.info("%s", printable(line + (f": {text}" if text else "")))

    def act(self, context: str, buf: str, value: str,
            map_class: str) -> tuple[str | None, list[str]]:
        """≈ hbc_action()."""
        command = value.split(None, 1)[0] if value.strip() and not value[:1].isspace() else ""
        text = value[len(command):].lstrip()
        verb = command.upper()
        if verb in ("WARN", "INFO"):
            self._log("warning" if verb == "WARN" else "info", context, buf, text)
        elif verb in ("REPLACE", "PREPEND"):
            if not text:
                log.warning("%s action without text in %s map", verb, map_class)
            elif context == "header" and not _HEADER.match(text):
                log.warning('bad %s header text "%s" in %s map -- '
                            'need "headername: headervalue"', verb, text, map_class)
            else:
                self._log(verb.lower(), context, buf, text)
                return (text, []) if verb == "REPLACE" else (buf, [text])
        elif verb == "STRIP":
            self._log("strip", context, buf, text)
            return DROP, []
        elif verb == "IGNORE":
            return DROP, []
        elif verb not in ("DUNNO", "OK"):
            log.warning("unsupported command in %s map: %s", map_class, value)
        return buf, []


class DeliveryChecks:
    """A delivery agent's tables, read once per configuration."""

    def __init__(self, cfg: Config, lmtp: bool = False) -> None:
        self.checks = ContentChecks(cfg, "lmtp_" if lmtp else "smtp_")

    def __bool__(self) -> bool:
        return bool(self.checks)

    async def apply(self, queue_id: str, content: bytes) -> bytes:
        """The content as the checks leave it; raises ChecksUnavailable when a table
        cannot answer (Postfix: "smtp header checks lookup error")."""
        insp = DeliveryInspection(self.checks, Origin(queue_id))
        changed = await mime.inspect(insp, content)
        if insp.verdict.write_error:
            raise ChecksUnavailable(f"{queue_id}: smtp header checks lookup error")
        return content if changed is None else changed[1]
