"""The command loop of one session (≈ smtpd.c's smtpd_proto()): the greeting,
one handler per verb, the disconnect line.

As in Postfix's loop, under smtpd_tls_security_level = encrypt every
command but HELO, EHLO, STARTTLS, NOOP and QUIT gets ``530`` before TLS,
and "improper command pipelining" is judged before a command runs. Every
failed command counts as an error; at smtpd_hard_error_limit the next
command gets ``421`` and the session ends. Nothing is queued until the
whole message is in and JetStream has acknowledged it (:mod:`.data`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.auth import do_auth
from ingress_smtpd.bdat import Hangup, do_bdat
from ingress_smtpd.data import do_data
from ingress_smtpd.ehlo import discard_keywords, do_ehlo, do_helo
from ingress_smtpd.envelope import SURROGATES, do_mail, do_rcpt
from ingress_smtpd.etrn import do_etrn
from ingress_smtpd.proxy_filter import drop as drop_proxy
from ingress_smtpd.starttls import HandshakeFailed, do_starttls, require_client_cert, wrapper_mode
from ingress_smtpd.verbs import Quit, do_noop, do_quit, do_rset, do_vrfy, unknown
from ingress_smtpd.xforward import do_xforward
from postbus.maps.table import TableRetry
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")

#: Postfix's command table order, used for the counters of the disconnect line.
COUNTED = ("helo", "ehlo", "xforward", "starttls", "auth", "mail", "rcpt", "data", "bdat",
           "rset", "noop", "vrfy", "etrn", "quit", "unknown")
JUNK = frozenset({"rset", "noop", "vrfy", "etrn"})  # SMTPD_CMD_FLAG_LIMIT
LAST = frozenset({"helo", "ehlo", "data", "noop", "vrfy"})  # SMTPD_CMD_FLAG_LAST: ends a batch
PRE_TLS = frozenset({"helo", "ehlo", "starttls", "noop", "quit"})  # SMTPD_CMD_FLAG_PRE_TLS

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


async def run(session: Session) -> None:
    """The whole session, from the greeting to the disconnect line."""
    conn, s = session.conn, session.s
    log.info("connect from %s", session.namaddr)
    local = await session.server.local_client(session.client_addr)
    session.header_context = session.server.cleanup.header_context(local)
    session.add_missing = session.header_context is not None or s.always_add_headers
    try:
        if session.hangup:
            conn.write(r.LOCAL_ERROR.format(host=s.myhostname))
            return
        if not await wrapper_mode(session) or not await session.limits.connect():
            return
        await discard_keywords(session)
        policy = session.server.policy
        denied = None if policy.delay_reject else await policy.check_connect(
            session.check_state())
        if denied is not None:  # instead of the greeting; every command but QUIT: 503
            session.access_denied = denied
            session.errors += 1
        if denied is None and session.milters is not None:
            denied = await milter.connect(session)
        conn.write(denied or r.BANNER.format(banner=s.banner))
        if session.access_denied.startswith("421"):
            return
        while True:
            line = await conn.readline(s.line_limit)
            if line is None:
                _lost(session)
                break
            if not line.endswith(b"\n"):
                text = line.decode("utf-8", "surrogateescape")
                log.warning("%s: request longer than %d: %.30s...",
                            session.namaddr, s.line_limit, text)
                await conn.skip_line(s.line_limit)
            text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
            if session.errors >= s.hard_error_limit:
                log.info("too many errors after %s from %s", session.where, session.namaddr)
                conn.write(r.TOO_MANY_ERRORS.format(host=s.myhostname))
                break
            if not await command(session, text):
                break
    except TimeoutError:
        log.info("timeout after %s%s from %s", _where(session), _data_bytes(session),
                 session.namaddr)
        conn.write(r.TIMEOUT.format(host=s.myhostname))
    except (ConnectionError, OSError, HandshakeFailed):
        _lost(session)
    finally:
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            if conn.push():  # the client is not reading: give it 5 seconds
                async with asyncio.timeout(5):  # no task per session, as wait_for() makes
                    await conn.drain()
        drop_proxy(session)
        await session.limits.disconnect()  # before the close, as Postfix tells anvil
        if session.milters is not None:
            await session.milters.disconnect()
        conn.close()
        log.info("disconnect from %s%s", session.namaddr, _stats(session))


async def command(session: Session, text: str) -> bool:
    """Run one command line; False ends the session.

    Postfix reads a command as a C string, so it ends at the first NUL;
    with smtputf8_enable a line that is not valid UTF-8 is refused
    before it is parsed (surrogates stand for the undecodable bytes)."""
    s = session.s
    text = text.partition("\x00")[0]
    session.line = text
    if s.smtputf8 and SURROGATES.search(text):
        session.where = "UNKNOWN"
        await session.reply(r.BAD_UTF8)
        session.errors += 1
        return True
    verb, _, arg = text.strip(" \t").replace("\t", " ").partition(" ")
    if not verb:  # no words at all: not even a command to count
        await session.reply(r.BAD_SYNTAX)
        session.errors += 1
        return True
    name = verb.lower()
    handler = HANDLERS.get(name)
    if handler is None:
        if verb.upper() in s.forbidden:
            log.warning("non-SMTP command from %s: %.100s", session.namaddr, text)
            session.conn.write("221 2.7.0 Error: I can break rules, too. Goodbye.")
            return False
        name = "unknown"
        session.where = "UNKNOWN"
    counter = session.counts.setdefault(name, [0, 0])
    counter[1] += 1
    if session.access_denied and name != "quit":
        await session.reply(r.ACCESS_DENIED_503.format(namaddr=session.namaddr))
        session.errors += 1
        return True
    if handler is not None:
        if s.tls.enforce and session.tls is None and name not in PRE_TLS:
            await session.reply(r.MUST_STARTTLS)
            session.errors += 1
            return True
        session.where = verb.upper()
        if (session.protocol != "ESMTP" or name in LAST) and not session.pipelining_logged \
                and session.conn.pending():
            _log_pipelining(session, name)
    try:
        ok = await handler(session, arg.strip(" ")) if handler else await unknown(session, arg)
    except Quit:
        counter[0] += 1
        return False
    except Hangup:
        session.errors += 1
        return False
    except TableRetry as exc:  # Postfix's SMTP_ERR_DATA: a table that cannot answer
        if str(exc):
            log.warning("%s", exc)
        text = r.LOCAL_DATA_ERROR.format(host=s.myhostname)
        log.info("NOQUEUE: reject: %s from %s: %s", session.where, session.namaddr, text)
        session.conn.write(text)
        return False
    if ok:
        counter[0] += 1
    else:
        session.errors += 1
    if name in JUNK:
        session.junk += 1
        if session.junk > s.junk_limit:
            session.errors += 1
    if name == "starttls" and ok:
        return await require_client_cert(session)
    return True


def _log_pipelining(session: Session, name: str) -> None:
    session.pipelining_logged = True
    pending = bytes(session.conn.buf[:100]).decode("utf-8", "replace")
    pending = pending.replace("\r", "\\r").replace("\n", "\\n")
    log.info("improper command pipelining after %s from %s: %s",
             name.upper(), session.namaddr, pending)


def _lost(session: Session) -> None:
    log.info("lost connection after %s%s from %s", _where(session), _data_bytes(session),
             session.namaddr)


def _where(session: Session) -> str:
    return "BDAT" if session.where == "BDAT content" else session.where


def _data_bytes(session: Session) -> str:
    if session.where == "BDAT content" and session.chunks is not None:
        return f" ({session.chunks.pending_bytes()} bytes)"
    return f" ({session.conn.data_bytes} bytes)" if session.where == "DATA" else ""


def _stats(session: Session) -> str:
    """The counters of the disconnect line (≈ smtpd.c's print_stats)."""
    out = []
    ok_all = total_all = 0
    for name in COUNTED:
        if name in session.counts:
            ok, total = session.counts[name]
            ok_all += ok
            total_all += total
            out.append(f" {name}={ok}" if ok == total else f" {name}={ok}/{total}")
    # always, 0/0 included: "any statistics with [0-9]/ indicate a problem"
    out.append(f" commands={ok_all}" if ok_all == total_all and total_all
               else f" commands={ok_all}/{total_all}")
    return "".join(out)
