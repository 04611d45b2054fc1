"""One SMTP session: the command loop and one handler per verb (≈ smtpd.c's smtpd_proto()).

The envelope verbs live here; HELO/EHLO (:mod:`ingress_smtpd.ehlo`), DATA
(:mod:`ingress_smtpd.data`), BDAT, ETRN and STARTTLS have modules of their
own. Replies and log lines are Postfix's (see :mod:`postbus.smtp.replies`).
As in Postfix's loop, under smtpd_tls_security_level = encrypt every
command but HELO, EHLO, STARTTLS, NOOP and QUIT gets ``530`` before TLS,
and "improper command pipelining" is judged before a command runs.
The session state (client, HELO, counters) is separate from the
transaction (sender, recipients), which RSET, HELO/EHLO, a queued or a
failed message reset.  Every failed command counts as an error: from
smtpd_soft_error_limit on each reply is delayed by smtpd_error_sleep_time,
and at smtpd_hard_error_limit the next command gets ``421`` and the session
ends.  Nothing is queued until the whole message is in and JetStream has
acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.auth import AuthState, do_auth
from ingress_smtpd.bdat import Chunks, Hangup, do_bdat
from ingress_smtpd.connection import Connection
from ingress_smtpd.data import do_data
from ingress_smtpd.ehlo import discard_keywords, do_ehlo, do_helo
from ingress_smtpd.etrn import do_etrn
from ingress_smtpd.proxy_filter import Proxy, proxy_rcpt
from ingress_smtpd.proxy_filter import drop as drop_proxy
from ingress_smtpd.restrictions import CheckMemory, CheckState, session_state
from ingress_smtpd.starttls import HandshakeFailed, do_starttls, require_client_cert, wrapper_mode
from ingress_smtpd.xforward import Forwarded, do_xforward
from ingress_smtpd.xforward import reset as reset_xforward
from postbus import metrics
from postbus.cleanup import Context
from postbus.maps.table import TableRetry
from postbus.queue.entry import QueueEntry
from postbus.queue.ids import new_queue_id
from postbus.smtp import replies as r
from postbus.smtp.address import (
    MailArgs,
    RcptArgs,
    ReplyError,
    parse_address,
    parse_mail,
    parse_rcpt,
    quote_local,
    split_args,
)
from postbus.tls_session import TlsSession

if TYPE_CHECKING:
    from ingress_smtpd.server import SmtpServer
    from postbus.resolve import ResolveReply

log = logging.getLogger("postbus.smtpd")
_SURROGATES = re.compile("[\udc80-\udcff]")

#: Postfix's command table order, used for the counters of the disconnect line.
COUNTED = ("helo", "ehlo", "xforward", "starttls", "auth", "mail", "rcpt", "data", "bdat",
           "rset", "noop", "vrfy", "etrn", "quit", "unknown")
JUNK = frozenset({"rset", "noop", "vrfy", "etrn"})  # SMTPD_CMD_FLAG_LIMIT
LAST = frozenset({"helo", "ehlo", "data", "noop", "vrfy"})  # SMTPD_CMD_FLAG_LAST: ends a batch
PRE_TLS = frozenset({"helo", "ehlo", "starttls", "noop", "quit"})  # SMTPD_CMD_FLAG_PRE_TLS

#: Writes a message to the queue: (entry, build(queue_id) -> content) -> queue ID.
QueueWriter = Callable[[QueueEntry, Callable[[str], bytes]], Awaitable[str]]


class Quit(Exception):
    """End the session after the replies written so far."""


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
        self._addr_reply: ResolveReply | None = None  # _check_addr()'s last answer
        if self.milters is not None and getattr(self, "milter_abort", False):
            self.milters.abort()
        self.milter_abort = False
        self.milter_hold, self.milter_discard = "", False

    # -- output -----------------------------------------------------------------------

    async def reply(self, text: str) -> None:
        if self.errors >= self.s.soft_error_limit and self.s.error_sleep > 0:
            await self.conn.flush()
            await asyncio.sleep(self.s.error_sleep)
        self.conn.write(text)
        if text.startswith("421"):  # smtpd_chat_reply(): a 421 ends the session
            raise Hangup

    def _log_reject(self, stage: str, reply: str, rcpt: str | None = None) -> None:
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

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        conn = self.conn
        log.info("connect from %s", self.namaddr)
        local = await self.server.local_client(self.client_addr)
        self.header_context = self.server.cleanup.header_context(local)
        self.add_missing = self.header_context is not None or self.s.always_add_headers
        try:
            if self.hangup:
                conn.write(r.LOCAL_ERROR.format(host=self.s.myhostname))
                return
            if not await wrapper_mode(self) or not await self.limits.connect():
                return
            await discard_keywords(self)
            denied = await self.server.policy.check_connect(self._check_state())
            if denied is not None:  # instead of the greeting; every command but QUIT: 503
                self.access_denied = denied
                self.errors += 1
            if denied is None and self.milters is not None:
                denied = await self._milter_connect()
            conn.write(denied or r.BANNER.format(banner=self.s.banner))
            if self.access_denied.startswith("421"):
                return
            while True:
                line = await conn.readline(self.s.line_limit)
                if line is None:
                    self._lost()
                    break
                if not line.endswith(b"\n"):
                    text = line.decode("utf-8", "surrogateescape")
                    log.warning("%s: request longer than %d: %.30s...",
                                self.namaddr, self.s.line_limit, text)
                    await conn.skip_line(self.s.line_limit)
                text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
                if self.errors >= self.s.hard_error_limit:
                    log.info("too many errors after %s from %s", self.where, self.namaddr)
                    conn.write(r.TOO_MANY_ERRORS.format(host=self.s.myhostname))
                    break
                if not await self.command(text):
                    break
        except TimeoutError:
            log.info("timeout after %s%s from %s", self._where(), self._data_bytes(),
                     self.namaddr)
            conn.write(r.TIMEOUT.format(host=self.s.myhostname))
        except (ConnectionError, OSError, HandshakeFailed):
            self._lost()
        finally:
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                async with asyncio.timeout(5):  # no task per session, as wait_for() makes
                    await conn.flush()
            drop_proxy(self)
            await self.limits.disconnect()  # before the close, as Postfix tells anvil
            if self.milters is not None:
                await self.milters.disconnect()
            conn.close()
            log.info("disconnect from %s%s", self.namaddr, self._stats())

    async def _milter_connect(self) -> str | None:
        """The milters' connect event: a reject is the greeting (≈ smtpd_proto())."""
        err = milter.check(self, await self.milters.connect(  # type: ignore[union-attr]
            self.client_name, self.client_addr, self.conn.peer[1]))
        if err is not None and err[0] == "5":
            self.errors += 1
            return f"554 {self.s.myhostname} ESMTP not accepting connections"
        if err is not None and err.startswith("421"):
            self.access_denied = "421"
            return f"421 {self.s.myhostname} Service unavailable - try again later"
        return None

    def _lost(self) -> None:
        log.info("lost connection after %s%s from %s", self._where(), self._data_bytes(),
                 self.namaddr)

    def _where(self) -> str:
        return "BDAT" if self.where == "BDAT content" else self.where

    def _data_bytes(self) -> str:
        if self.where == "BDAT content" and self.chunks is not None:
            return f" ({self.chunks.pending_bytes()} bytes)"
        return f" ({self.conn.data_bytes} bytes)" if self.where == "DATA" else ""

    def _stats(self) -> str:
        out = []
        ok_all = total_all = 0
        for name in COUNTED:
            if name in self.counts:
                ok, total = self.counts[name]
                ok_all += ok
                total_all += total
                out.append(f" {name}={ok}" if ok == total else f" {name}={ok}/{total}")
        # always, 0/0 included: "any statistics with [0-9]/ indicate a problem"
        out.append(f" commands={ok_all}" if ok_all == total_all and total_all
                   else f" commands={ok_all}/{total_all}")
        return "".join(out)

    async def command(self, text: str) -> bool:
        """Run one command line; False ends the session.

        Postfix reads a command as a C string, so it ends at the first NUL;
        with smtputf8_enable a line that is not valid UTF-8 is refused
        before it is parsed (surrogates stand for the undecodable bytes)."""
        text = text.partition("\x00")[0]
        self.line = text
        if self.s.smtputf8 and _SURROGATES.search(text):
            self.where = "UNKNOWN"
            await self.reply(r.BAD_UTF8)
            self.errors += 1
            return True
        verb, _, arg = text.strip(" \t").replace("\t", " ").partition(" ")
        if not verb:  # no words at all: not even a command to count
            await self.reply(r.BAD_SYNTAX)
            self.errors += 1
            return True
        name = verb.lower()
        handler = self.HANDLERS.get(name)
        if handler is None:
            if verb.upper() in self.s.forbidden:
                log.warning("non-SMTP command from %s: %.100s", self.namaddr, text)
                self.conn.write("221 2.7.0 Error: I can break rules, too. Goodbye.")
                return False
            name = "unknown"
            self.where = "UNKNOWN"
        counter = self.counts.setdefault(name, [0, 0])
        counter[1] += 1
        if self.access_denied and name != "quit":
            await self.reply(r.ACCESS_DENIED_503.format(namaddr=self.namaddr))
            self.errors += 1
            return True
        if handler is not None:
            if self.s.tls.enforce and self.tls is None and name not in PRE_TLS:
                await self.reply(r.MUST_STARTTLS)
                self.errors += 1
                return True
            self.where = verb.upper()
            if (self.protocol != "ESMTP" or name in LAST) and not self.pipelining_logged \
                    and self.conn.pending():
                self._log_pipelining(name)
        try:
            ok = await handler(self, arg.strip(" ")) if handler else await self.unknown(arg)
        except Quit:
            counter[0] += 1
            return False
        except Hangup:
            self.errors += 1
            return False
        except TableRetry as exc:  # Postfix's SMTP_ERR_DATA: a table that cannot answer
            if str(exc):
                log.warning("%s", exc)
            text = r.LOCAL_DATA_ERROR.format(host=self.s.myhostname)
            log.info("NOQUEUE: reject: %s from %s: %s", self.where, self.namaddr, text)
            self.conn.write(text)
            return False
        if ok:
            counter[0] += 1
        else:
            self.errors += 1
        if name in JUNK:
            self.junk += 1
            if self.junk > self.s.junk_limit:
                self.errors += 1
        if name == "starttls" and ok:
            return await require_client_cert(self)
        return True

    def _log_pipelining(self, name: str) -> None:
        self.pipelining_logged = True
        pending = bytes(self.conn.buf[:100]).decode("utf-8", "replace")
        pending = pending.replace("\r", "\\r").replace("\n", "\\n")
        log.info("improper command pipelining after %s from %s: %s",
                 name.upper(), self.namaddr, pending)

    # -- verbs -----------------------------------------------------------------------------

    async def unknown(self, arg: str) -> bool:
        if self.milters is not None:  # the verb (smtpd's tokenized buffer); only a 4xx is
            # sent, our "502 ... command not recognized" is not overridden (≈ smtpd.c)
            err = await self.milters.unknown(self.line.strip(" \t").split(" ")[0])
            if err is not None and err[0] == "4":
                await self.reply(err)
                return False
            if err is not None and err[0] not in "HDS5":
                log.warning("unexpected SMFIC_UNKNOWN response: %s", err)
        await self.reply(r.UNRECOGNIZED)
        return False

    async def do_mail(self, arg: str) -> bool:
        if self.s.helo_required and not self.helo:
            await self.reply(r.NEED_HELO)
            return False
        if self.sender is not None:
            await self.reply(r.NESTED_MAIL)
            return False
        if self.bdat_state is not None:
            await self.reply(r.MAIL_AFTER_BDAT)
            return False
        if arg[:5].lower() == "from:" and arg[5:].strip() and not await self.limits.mail():
            return False
        try:
            mail = parse_mail(arg, strict=self.s.strict_envelopes, dsn="DSN" not in self.discard,
                              smtputf8=self.s.smtputf8 and "SMTPUTF8" not in self.discard)
        except ReplyError as exc:
            if exc.bad_address is not None:
                log.warning("Illegal address syntax from %s in MAIL command: %s",
                            self.namaddr, exc.bad_address)
            await self.reply(exc.reply)
            return False
        if not await self._check_addr(mail.sender, mail.smtputf8, "MAIL", mail.path):
            await self.reply(r.BAD_SENDER_SYNTAX)
            return False
        if mail.size is not None and self.s.size_limit and mail.size > self.s.size_limit:
            self.sender = mail.sender  # for the log line only
            self._log_reject("MAIL", r.SIZE_EXCEEDS_LIMIT)
            self.sender = None
            await self.reply(r.SIZE_EXCEEDS_LIMIT)
            return False
        if not self.server.policy.delay_reject:  # smtpd_delay_reject = no: check now
            state = self._check_state()
            state.sender = mail.sender
            reject = await self.server.policy.check_mail(state)
            if reject is not None:
                await self.reply(reject)
                return False
        if (milters := milter.active(self)) is not None:
            self.milter_abort = True
            self.milter_sender = mail.sender
            self.milter_routes[0] = await milter.route(self, mail.sender)
            err = milter.check(self, await milters.mail(milter.args(arg, "from:")))
            if err is not None:
                self.reset()
                await self.reply(err)
                return False
        self.sender, self.mail, self.mail_line = mail.sender, mail, self.line
        self.conn.write(r.MAIL_OK)
        return True

    async def do_rcpt(self, arg: str) -> bool:
        if self.sender is None:
            await self.reply(r.NEED_MAIL)
            return False
        if self.bdat_state is not None:
            await self.reply(r.RCPT_AFTER_BDAT)
            return False
        if arg[:3].lower() == "to:" and arg[3:].strip() and not await self.limits.rcpt():
            return False
        try:
            rcpt = parse_rcpt(arg, strict=self.s.strict_envelopes, dsn="DSN" not in self.discard)
        except ReplyError as exc:
            if exc.bad_address is not None:
                log.warning("Illegal address syntax from %s in RCPT command: %s",
                            self.namaddr, exc.bad_address)
            if exc.warning:
                log.warning("%s", exc.warning)
            await self.reply(exc.reply)
            return False
        smtputf8 = self.mail is not None and self.mail.smtputf8
        if not await self._check_addr(rcpt.address, smtputf8, "RCPT", rcpt.path, self.sender):
            await self.reply(r.BAD_RECIPIENT_SYNTAX)
            return False
        if len(self.recipients) >= self.s.recipient_limit:
            await self.reply(r.TOO_MANY_RECIPIENTS)
            return False
        state = self._check_state(rcpt.address)
        if self._addr_reply is not None:  # one resolve per RCPT (smtpd_resolve_addr()'s cache)
            state.resolved[rcpt.address] = self._addr_reply
        reject = await self.server.policy.check_rcpt(state)
        if milter.active(self):
            reject = await self._milter_rcpt(rcpt.address, arg, reject)
        if reject is not None:
            if not reject.startswith("milter:"):
                self._log_reject("RCPT", reject, rcpt.address)
            reject = reject.removeprefix("milter:")
            await self.reply(reject)
            return False
        reject = await proxy_rcpt(self)  # smtpd_proxy_filter: the filter has its say
        if reject is not None:
            await self.reply(reject)
            return False
        self.recipients.append(rcpt)
        self.conn.write(r.RCPT_OK)
        return True

    async def _milter_rcpt(self, address: str, arg: str, reject: str | None) -> str | None:
        """The milters' RCPT event; a rejected recipient only to those asking for it."""
        assert self.milters is not None
        self.milter_rcpt = (address, reject)
        self.milter_routes[1] = await milter.route(self, address) if reject is None else None
        err = await self.milters.rcpt(milter.args(arg, "to:"), rejected=reject is not None)
        err = milter.check(self, err) if reject is None else None
        self.milter_rcpt = (address, None)
        if err is None and reject is None and not self.check_memory.queue_id:
            # Postfix opens the queue file (and so has the {i} macro) after the first
            # recipient the milters accepted
            self.check_memory.queue_id = new_queue_id(self.s.long_queue_ids)
        return reject if err is None else "milter:" + err

    async def _check_addr(self, address: str, smtputf8: bool, verb: str, path: str,
                          sender: str = "") -> bool:
        """The address resolves to something usable (≈ smtpd_check_addr()): a valid
        domain after rewriting, and an ASCII domain unless the client said SMTPUTF8.
        The answer (for mail from ``sender``) stays in ``_addr_reply`` for the
        restrictions, as Postfix's smtpd_resolve_addr() cache keeps it."""
        self._addr_reply = None
        if not address:
            return True
        if _SURROGATES.search(address):
            return False  # not UTF-8 (smtputf8_enable = no): cannot be queued
        try:
            reply = await self.server.policy.resolver.resolve(address, sender)
        except TableRetry:
            return True  # the restrictions meet the same failure and answer 451
        self._addr_reply = reply
        domain = reply.recipient.rpartition("@")[2]
        if not reply.error and (smtputf8 or domain.isascii()):
            return True
        log.warning("Illegal address syntax from %s in %s command: %s", self.namaddr, verb, path)
        return False

    def _check_state(self, recipient: str = "") -> CheckState:
        return session_state(self, recipient)

    async def do_rset(self, arg: str) -> bool:
        if arg:
            await self.reply(r.RSET_SYNTAX)
            return False
        self.reset()
        self.conn.write(r.OK)
        return True

    async def do_noop(self, arg: str) -> bool:
        self.conn.write(r.OK)
        return True

    async def do_quit(self, arg: str) -> bool:
        self.conn.write(r.BYE)
        raise Quit

    async def do_vrfy(self, arg: str) -> bool:
        if self.s.disable_vrfy:
            await self.reply(r.VRFY_DISABLED)
            return False
        tokens = split_args(arg)
        smtputf8 = len(tokens) > 1 and tokens[-1].upper() == "SMTPUTF8" \
            and self.s.smtputf8 and "SMTPUTF8" not in self.discard
        if smtputf8:
            tokens.pop()
        if not tokens:
            await self.reply(r.VRFY_SYNTAX)
            return False
        if not await self.limits.rcpt():
            return False
        if await milter.other(self):
            return False
        try:
            address = parse_address(tokens[0]) if len(tokens) == 1 else ""
        except ValueError:
            address = ""
        if not address:
            log.warning("Illegal address syntax from %s in VRFY command: %s", self.namaddr, arg)
            await self.reply(r.BAD_RECIPIENT_SYNTAX)
            return False
        if not await self._check_addr(address, smtputf8, "VRFY", tokens[0]):
            await self.reply(r.BAD_RECIPIENT_SYNTAX)
            return False
        reject = await self.server.policy.check_rcpt(self._check_state(address))
        if reject is not None:
            self._log_reject("VRFY", reject, address)
            await self.reply(reject)
            return False
        self.conn.write(r.VRFY_OK.format(address=tokens[0]))
        return True

    HANDLERS: dict[str, Callable[[Session, str], Awaitable[bool]]] = {
        "helo": do_helo,
        "ehlo": do_ehlo,
        "mail": do_mail,
        "rcpt": do_rcpt,
        "data": do_data,
        "rset": do_rset,
        "noop": do_noop,
        "quit": do_quit,
        "vrfy": do_vrfy,
        "etrn": do_etrn,
        "starttls": do_starttls,
        "bdat": do_bdat,
        "auth": do_auth,
        "xforward": do_xforward,
    }
