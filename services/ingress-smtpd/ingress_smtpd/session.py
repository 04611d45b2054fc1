"""One SMTP session's state (≈ smtpd.c's SMTPD_STATE).

The session state (client, HELO, counters, TLS, AUTH) is separate from the
transaction (sender, recipients), which RSET, HELO/EHLO, a queued or a
failed message reset. The command loop that runs a session is
:mod:`ingress_smtpd.protocol`; the verbs have modules of their own
(:mod:`.envelope` for MAIL and RCPT, :mod:`.verbs`, :mod:`.ehlo`,
:mod:`.data`, :mod:`.bdat`, ...). Every reply goes through
:meth:`Session.reply`: from smtpd_soft_error_limit errors on it is delayed by
smtpd_error_sleep_time, and a ``421`` ends the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.auth import AuthState
from ingress_smtpd.bdat import Chunks, Hangup
from ingress_smtpd.connection import Connection
from ingress_smtpd.proxy_filter import Proxy
from ingress_smtpd.proxy_filter import drop as drop_proxy
from ingress_smtpd.restrictions import CheckMemory, CheckState, session_state
from ingress_smtpd.xforward import Forwarded
from ingress_smtpd.xforward import reset as reset_xforward
from postbus import metrics
from postbus.cleanup import Context
from postbus.queue.entry import QueueEntry
from postbus.smtp.address import MailArgs, RcptArgs, quote_local
from postbus.tls_session import TlsSession

if TYPE_CHECKING:
    from ingress_smtpd.server import SmtpServer
    from postbus.resolve import ResolveReply

log = logging.getLogger("postbus.smtpd")

#: Writes a message to the queue: (entry, build(queue_id) -> content) -> queue ID.
QueueWriter = Callable[[QueueEntry, Callable[[str], bytes]], Awaitable[str]]


class Session:
    def __init__(self, server: SmtpServer, conn: Connection, name: str, addr: str,
                 hangup: bool = False) -> None:
        self.server = server
        self.hangup = hangup  # no valid PROXY header: "421 4.3.0 Server local error" only
        self.s = server.settings
        self.conn = conn
        self.client_name = name
        self.client_addr = addr
        self.namaddr = f"{name}[{addr}]"
        self.helo = ""
        self.protocol = "SMTP"
        self.where = "CONNECT"
        self.errors = 0
        self.junk = 0
        self.counts: dict[str, list[int]] = {}
        self.pipelining_logged = False
        self.header_context: Context | None = None
        self.add_missing = False
        self.tls: TlsSession | None = None
        self.discard = self.s.discard  # EHLO keywords not offered to this client
        self.discard_failed = False  # the address maps could not say which
        self.line = ""  # the command line being run, as received
        self.limits = server.limits.for_session(self)  # connection and rate limits (anvil)
        self.check_memory = CheckMemory()  # what one restriction stage leaves for the next
        self.access_denied = ""  # smtpd_delay_reject = no: the client was rejected at connect
        self.auth = AuthState()  # SMTP AUTH; STARTTLS starts it anew
        self.proxy: Proxy | None = None  # smtpd_proxy_filter's connection, per transaction
        self.mail_line = ""  # the MAIL FROM command as received, for the proxy filter
        self.xforward: Forwarded | None = None  # XFORWARD attributes, per transaction
        self.milters = milter.start(self)  # smtpd_milters: None when there are none
        self.milter_hold = ""  # a milter's quarantine: the transaction goes on hold
        self.milter_discard = False
        self.reset()

    def reset(self) -> None:
        self.sender: str | None = None
        self.mail: MailArgs | None = None
        self.recipients: list[RcptArgs] = []
        self.bdat_state: str | None = None  # "ok": taking chunks; "error": skipping them
        self.chunks: Chunks | None = None
        self.check_memory.reset_transaction()
        drop_proxy(self)
        reset_xforward(self)
        self.milter_sender: str | None = None  # the sender and recipient milters are told
        self.milter_rcpt: tuple[str | None, str | None] = (None, None)  # (address, reject)
        self.milter_routes: list[tuple[str, str, str] | None] = [None, None]  # resolved
        self.addr_reply: ResolveReply | None = None  # check_addr()'s last answer
        if self.milters is not None and getattr(self, "milter_abort", False):
            self.milters.abort()
        self.milter_abort = False
        self.milter_hold, self.milter_discard = "", False

    def release(self) -> None:
        """The session has ended: drop the references back to it (its limits, its milters'
        macro lookup), so that reference counting frees it and all it holds at once. Left
        in a cycle, every session waited for the garbage collector, whose collections
        then walked each one's objects."""
        del self.limits
        self.milters = None

    # -- output -----------------------------------------------------------------------

    async def reply(self, text: str) -> None:
        if self.errors >= self.s.soft_error_limit and self.s.error_sleep > 0:
            await self.conn.flush()
            await asyncio.sleep(self.s.error_sleep)
        self.conn.write(text)
        if text.startswith("421"):  # smtpd_chat_reply(): a 421 ends the session
            raise Hangup

    def log_reject(self, stage: str, reply: str, rcpt: str | None = None) -> None:
        """The ``NOQUEUE: reject:`` line of a restriction's reject (≈ log_whatsup())."""
        parts = []
        if self.sender is not None:
            parts.append(f"from=<{quote_local(self.sender)}>")
        if rcpt is not None:
            parts.append(f"to=<{quote_local(rcpt)}>")
        parts.append(f"proto={self.protocol}")
        if self.helo:
            parts.append(f"helo=<{self.helo}>")
        log.info("NOQUEUE: reject: %s from %s: %s; %s", stage, self.namaddr, reply, " ".join(parts))
        metrics.smtpd_rejects.labels(self.server.listener, stage.lower(), reply[:3]).inc()

    # -- restrictions -----------------------------------------------------------------

    def check_state(self, recipient: str = "") -> CheckState:
        """What the restrictions see of this session now."""
        return session_state(self, recipient)
