"""A message as milters see and change it (≈ cleanup_milter.c's edit call-backs).

The message is held as header lines and body; smtpd's own Received: header
is first and hidden (milters neither see it nor count it when they change
or delete "the n-th header of a name", as Postfix's auto_hdrs), but an
insert counts every header, so index 0 goes above it as in Postfix.
Added and changed envelope addresses go through cleanup's rewriting like
any other (sender: canonical and masquerading; recipients: also virtual
aliases); a deleted recipient is every one whose original recipient is the
address given. A quarantine puts the message on hold.
"""

from __future__ import annotations

import logging

from postbus import tok822_tree
from postbus.cleanup.api import CleanupState
from postbus.queue.entry import Recipient

log = logging.getLogger("postbus.cleanup")

CRLF = b"\r\n"


def internal(external: str) -> str:
    """``<user@domain>`` as a milter sends it -> the internal form (≈ tok822_internalize)."""
    tree = tok822_tree.parse(external)
    for addr in tok822_tree.addresses(tree):
        return tok822_tree.internalize(addr.head)
    return external.strip().strip("<>")


def _lines(text: str) -> bytes:
    """A header value from a milter: its ``\\n`` (or CRLF) line breaks as CRLF."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")


class MessageEdit:
    """The message under milter inspection, its envelope and the edits so far."""

    def __init__(self, content: bytes, sender: str, recipients: list[Recipient],
                 state: CleanupState, hidden: int = 0) -> None:
        """``state``: a fresh cleanup state, to rewrite the addresses milters add."""
        end = content.find(b"\r\n\r\n")
        if content.startswith(CRLF):
            block, self.body = b"", content[2:]
        elif end < 0:
            block, self.body = content if content.endswith(CRLF) else content + CRLF, b""
        else:
            block, self.body = content[:end + 2], content[end + 4:]
        self.headers: list[bytes] = []
        for line in block.split(CRLF)[:-1]:
            if line[:1] in (b" ", b"\t") and self.headers:
                self.headers[-1] += line + CRLF
            else:
                self.headers.append(line + CRLF)
        self.hidden = min(hidden, len(self.headers))  # smtpd's Received: on top
        self.sender = sender
        self.recipients = recipients
        self.state = state
        self.changed = False

    # -- what a milter sees -------------------------------------------------------------

    def content(self) -> tuple[list[tuple[str, str]], bytes]:
        out: list[tuple[str, str]] = []
        for raw in self.headers[self.hidden:]:
            text = raw.decode("utf-8", "surrogateescape").removesuffix("\r\n")
            name, _, value = text.partition(":")
            out.append((name.rstrip(" \t"), value.replace("\r\n", "\n")))
        return out, self.body

    def message(self) -> bytes:
        return b"".join(self.headers) + CRLF + self.body

    # -- headers -------------------------------------------------------------------------

    def _find(self, index: int, name: str) -> int:
        """The position of the index-th (1-based) visible header called ``name``, or -1."""
        wanted = name.lower()
        for pos in range(self.hidden, len(self.headers)):
            label = self.headers[pos].split(b":", 1)[0].rstrip(b" \t")
            if label.decode("utf-8", "surrogateescape").lower() == wanted:
                index -= 1
                if index == 0:
                    return pos
        return -1

    def add_header(self, name: str, space: str, value: str) -> None:
        self.headers.append(_lines(f"{name}:{space}{value}") + CRLF)
        self.changed = True

    def upd_header(self, index: int, name: str, space: str, value: str) -> None:
        pos = self._find(index, name)
        if pos < 0:  # Sendmail: changing a header that is not there adds it
            self.add_header(name, space, value)
            return
        self.headers[pos] = _lines(f"{name}:{space}{value}") + CRLF
        self.changed = True

    def ins_header(self, index: int, name: str, space: str, value: str) -> None:
        pos = min(max(index - 1, 0), len(self.headers))
        self.headers.insert(pos, _lines(f"{name}:{space}{value}") + CRLF)
        if pos < self.hidden:
            self.hidden += 1
        self.changed = True

    def del_header(self, index: int, name: str) -> None:
        pos = self._find(index, name)
        if pos >= 0:
            del self.headers[pos]
            self.changed = True

    def repl_body(self, body: bytes) -> None:
        """The new body in CRLF lines; a bare LF ends a line too (as Postfix reads it)."""
        self.body = body.replace(CRLF, b"\n").replace(b"\n", CRLF)
        self.changed = True

    # -- envelope ------------------------------------------------------------------------

    async def chg_from(self, address: str, args: str) -> None:
        if args:
            log.warning("%s: ignoring ESMTP arguments \"%.100s\" in SMFI_CHGFROM request",
                        self.state.status.queue_id, args)
        self.sender = await self.state.sender(internal(address))

    async def add_rcpt(self, address: str, args: str) -> None:
        notify = ""
        for arg in args.split():
            if arg.upper().startswith("NOTIFY="):
                notify = arg[7:].upper()
        before = len(self.state.recipients)
        self.state._dups.clear()  # a milter's recipient is added even if already there
        await self.state.recipient(internal(address), notify=notify)
        self.recipients.extend(self.state.recipients[before:])

    def del_rcpt(self, address: str) -> None:
        wanted = internal(address)
        self.recipients[:] = [r for r in self.recipients
                              if (r.orig_rcpt or r.address) != wanted]


def verdict(reply: str, *, queue_id: str, event: str, client: str, sender: str | None,
            recipient: str | None, proto: str, helo: str) -> tuple[str, str]:
    """A milter's reply as cleanup takes it (≈ cleanup_milter_apply()), logged:
    ``("hold", reason)``, ``("discard", "")`` or ``("reject", smtp reply)``."""
    if reply[0] == "H":
        kind, action, text = "hold", "milter-hold", reply[1:] or "milter triggers HOLD action"
        out = text
    elif reply[0] == "D":
        kind, action, text, out = "discard", "milter-discard", "milter triggers DISCARD " \
            "action", ""
    else:
        if reply[0] == "S":
            reply = "421 4.7.0 Service unavailable"
        kind, action, text, out = "reject", "milter-reject", reply[4:], reply
    text = text.replace("\r", "?").replace("\n", "?")  # as Postfix's logging prints them
    line = f"{queue_id}: {action}: {event} from {client}: {text};"
    if sender is not None:
        line += f" from=<{sender}>"
    if recipient is not None:
        line += f" to=<{recipient}>"
    line += f" proto={proto}"
    if helo:
        line += f" helo=<{helo}>"
    log.info("%s", line)
    return kind, out
