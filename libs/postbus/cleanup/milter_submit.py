"""non_smtpd_milters for mail that does not come over SMTP (≈ cleanup_milter_emul_mail(),
cleanup_milter_emul_rcpt(), cleanup_milter_emul_data() and cleanup_milter_inspect()).

The milters are told of a connection from ``localhost`` [127.0.0.1], an EHLO
``localhost``, the sender and each recipient (external form, no ``<>``, as
Postfix sends them here), then the message. A reject ends the submission
(CleanupError: ``postbus sendmail`` says "message not accepted"); a milter
cannot reject one recipient of a submission, that is a configuration error
that defers the whole message, as in Postfix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from postbus.cleanup.api import Cleanup, Context
from postbus.cleanup.milter_edit import MessageEdit, verdict
from postbus.cleanup.status import CleanupError, MessageDiscarded, Stat
from postbus.milter import Milters, MilterSettings, Reply
from postbus.queue.entry import QueueEntry
from postbus.smtp.address import quote_local

log = logging.getLogger("postbus.cleanup")


async def inspect(settings: MilterSettings, cleanup: Cleanup, entry: QueueEntry,
                  content: bytes, context: Context | None) -> bytes:
    """Run the milters over a cleaned submission; returns the content to queue and
    changes ``entry`` (sender, recipients, hold)."""
    current: dict[str, str | None] = {"rcpt": None}

    def lookup(name: str) -> str | None:
        if name == "i":
            return entry.queue_id
        if name == "_":
            return "localhost [127.0.0.1]"
        if name in ("{client_addr}", "{daemon_addr}"):
            return "127.0.0.1"
        if name in ("{client_name}", "{client_ptr}"):
            return "localhost"
        if name == "{mail_addr}":
            return quote_local(entry.sender) if entry.sender else ""
        if name == "{rcpt_addr}":
            return current["rcpt"]
        return None

    milters = Milters(settings, lookup, log)
    qid = entry.queue_id or "NOQUEUE"

    def apply(event: str, reply: Reply) -> None:
        if reply is None or (reply[0] == "H" and entry.queue == "hold"):  # held: once
            return
        kind, out = verdict(reply, queue_id=qid, event=event, client="localhost[127.0.0.1]",
                            sender=entry.sender, recipient=current["rcpt"], proto="",
                            helo="")
        if kind == "hold":
            entry.queue = "hold"
        elif kind == "discard":
            raise MessageDiscarded(qid)
        elif out[0] == "4":
            raise CleanupError(Stat.DEFER, out[4:])
        else:  # as content a header check rejects: bounced to the sender (cleanup_bounce())
            raise _Bounce(out[4:])

    try:
        return await _events(milters, apply, entry, content, cleanup, context, current, qid)
    except _Bounce as bounce:
        dsn, _, text = bounce.reason.partition(" ")
        for rcpt in entry.recipients:
            rcpt.state, rcpt.dsn, rcpt.reason, rcpt.relay = "bounced", dsn, text, "none"
        return content
    finally:
        await milters.disconnect()


class _Bounce(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _events(milters: Milters, apply: Callable[[str, Reply], None], entry: QueueEntry,
                  content: bytes, cleanup: Cleanup, context: Context | None,
                  current: dict[str, str | None], qid: str) -> bytes:
    """The emulated SMTP events, then the message (≈ cleanup_milter_emul_*())."""
    apply("CONNECT", await milters.connect("localhost", "127.0.0.1", 0))
    apply("EHLO", await milters.helo("localhost"))
    apply("MAIL", await milters.mail([quote_local(entry.sender) if entry.sender else ""]))
    for rcpt in entry.recipients:
        current["rcpt"] = quote_local(rcpt.address)
        reply = await milters.rcpt([current["rcpt"] or ""])
        if reply is not None and reply[0] in "45S":
            log.warning("%s: milter configuration error: can't reject recipient in "
                        "non-smtpd(8) submission", qid)
            log.warning("%s: message not accepted, try again later", qid)
            raise CleanupError(Stat.DEFER, "4.3.5 Server configuration error")
        apply("RCPT", reply)
    apply("DATA", await milters.data())
    state = cleanup.begin(queue_id=qid, context=context, mapping=cleanup.mapping)
    edit = MessageEdit(content, entry.sender, entry.recipients, state)
    reply = await milters.message(edit.content, edit)
    entry.sender = edit.sender
    apply("END-OF-MESSAGE", reply)
    return edit.message() if edit.changed else content
