"""STARTTLS and TLS wrapper mode (≈ smtpd.c's starttls_cmd() and smtpd_start_tls()).

STARTTLS resets the session as RFC 3207 asks (HELO, transaction), throws
away whatever the client pipelined after it, and hands the socket to the
TLS handshake; a handshake that fails or does not finish within
smtpd_starttls_timeout ends the session, as Postfix: the conversation is
in an unknown state. Wrapper mode (smtpd_tls_wrappermode, port 465) does
the same handshake before the greeting. With smtpd_tls_req_ccert under
encrypt, a client without a trusted certificate gets ``421 4.7.1`` (after
its next command, unless in wrapper mode) and the session ends.
"""

from __future__ import annotations

import _ssl
import logging
import re
import ssl
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.auth import AuthState
from ingress_smtpd.bdat import Hangup
from postbus.smtp import replies as r
from postbus.tls import LOG_SUMMARY
from postbus.tls_session import session_facts

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")


class HandshakeFailed(Exception):
    """The TLS handshake did not succeed: the session is over (lost connection)."""


async def do_starttls(session: Session, arg: str) -> bool:
    if arg:
        await session.reply(r.STARTTLS_SYNTAX)
        return False
    if await milter.other(session, tls=True):
        return False
    if session.tls is not None:
        await session.reply(r.TLS_ALREADY_ACTIVE)
        return False
    server_tls = session.server.tls
    if server_tls is None or not server_tls.settings.use_tls or "STARTTLS" in session.discard:
        await session.reply(r.NOT_IMPLEMENTED)
        return False
    context = server_tls.context()
    if context is None:
        await session.reply(r.TLS_NOT_AVAILABLE)
        return False
    if not await session.limits.starttls():
        return False
    session.conn.write(r.STARTTLS_READY)
    await session.conn.flush()
    session.helo = ""
    session.reset()
    session.auth = AuthState()  # a login before TLS does not count after it
    if not await session.limits.new_tls_session(await start_tls(session, context)):
        raise Hangup
    return True


async def wrapper_mode(session: Session) -> bool:
    """smtpd_tls_wrappermode: TLS before the greeting; False ends the session."""
    if not session.s.tls.wrappermode:
        return True
    server_tls = session.server.tls
    context = server_tls.context() if server_tls is not None else None
    if context is None:
        log.warning("Wrapper-mode request dropped from %s for service %s. TLS context "
                    "initialization failed. For details see earlier warnings in your logs.",
                    session.namaddr, session.server.listener)
        return False
    if not await session.limits.wrapper():
        return False
    if not await session.limits.new_tls_session(await start_tls(session, context)):
        return False
    return await require_client_cert(session)


async def start_tls(session: Session, context: ssl.SSLContext) -> bool:
    """The handshake and what follows it: whether the TLS session was resumed;
    HandshakeFailed ends the session."""
    settings = session.s.tls
    server_tls = session.server.tls
    assert server_tls is not None
    try:
        sslobj = await session.conn.start_tls(context, settings.handshake_timeout)
    except TimeoutError:
        log.info("SSL_accept error from %s: Connection timed out", session.namaddr)
        raise HandshakeFailed from None
    except ssl.SSLError as exc:
        log.info("SSL_accept error from %s: -1", session.namaddr)
        log.warning("TLS library problem: %s", _library_problem(exc))
        raise HandshakeFailed from None
    except (ConnectionError, OSError):
        log.info("SSL_accept error from %s: lost connection", session.namaddr)
        raise HandshakeFailed from None
    facts = session_facts(sslobj, server_tls.native, settings.fingerprint_digest,
                          settings.ask_ccert)
    session.tls = facts
    if facts.peer_present and not facts.peer_trusted and settings.req_ccert:
        log.info("%s", facts.verify_error(session.namaddr))  # TLS_LOG_UNTRUSTED
    if settings.loglevel >= LOG_SUMMARY:
        log.info("%s", facts.summary(session.namaddr))
    return sslobj.session_reused


async def require_client_cert(session: Session) -> bool:
    """smtpd_tls_req_ccert under encrypt: False (after the 421) when the client has no
    trusted certificate."""
    facts = session.tls
    if facts is None or not session.s.tls.req_ccert or facts.peer_trusted:
        return True
    why = r.CCERT_UNTRUSTED if facts.peer_present else r.NO_CCERT
    log.info("NOQUEUE: abort: TLS from %s: %s", session.namaddr, why)
    if not session.s.tls.wrappermode:
        await session.conn.readline(session.s.line_limit)  # the next command, unanswered
    session.conn.write(r.CCERT_REFUSED.format(host=session.s.myhostname, why=why))
    return False


_LIBRARIES = {"SSL": "SSL routines", "X509": "x509 certificate routines",
              "PEM": "PEM routines", "ASN1": "asn1 encoding routines"}


def _library_problem(exc: ssl.SSLError) -> str:
    """OpenSSL's error as tls_print_errors() shows it (ERR_error_string_n()), without the
    source file and line that only OpenSSL's error queue knows."""
    reason = exc.reason or ""
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    text = re.sub(r"^\[[^]]*\] ", "", text)
    text = re.sub(r" \(_ssl\.c:\d+\)$", "", text)
    codes = _ssl.err_names_to_codes.get(reason) if reason else None
    if codes is None:
        return text
    lib, num = codes
    library = _LIBRARIES.get(exc.library or "", exc.library or "")
    return f"error:{(lib << 23) | num:08X}:{library}::{text}"
