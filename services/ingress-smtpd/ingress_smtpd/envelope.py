"""MAIL FROM and RCPT TO (≈ smtpd.c's mail_cmd() and rcpt_cmd()).

Each address is parsed (:mod:`postbus.smtp.address`), then must resolve to
something usable (:func:`check_addr`, ≈ smtpd_check_addr()) before the
restrictions, the milters and the proxy filter have their say. A sender or
recipient is kept only once all of them accepted it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.proxy_filter import proxy_rcpt
from postbus.maps.table import TableRetry
from postbus.smtp import replies as r
from postbus.smtp.address import ReplyError, parse_mail, parse_rcpt

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")
SURROGATES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8


async def do_mail(session: Session, arg: str) -> bool:
    s = session.s
    if s.helo_required and not session.helo:
        await session.reply(r.NEED_HELO)
        return False
    if session.sender is not None:
        await session.reply(r.NESTED_MAIL)
        return False
    if session.bdat_state is not None:
        await session.reply(r.MAIL_AFTER_BDAT)
        return False
    if arg[:5].lower() == "from:" and arg[5:].strip() and not await session.limits.mail():
        return False
    try:
        mail = parse_mail(arg, strict=s.strict_envelopes, dsn="DSN" not in session.discard,
                          smtputf8=s.smtputf8 and "SMTPUTF8" not in session.discard)
    except ReplyError as exc:
        if exc.bad_address is not None:
            log.warning("Illegal address syntax from %s in MAIL command: %s",
                        session.namaddr, exc.bad_address)
        await session.reply(exc.reply)
        return False
    if not await check_addr(session, mail.sender, mail.smtputf8, "MAIL", mail.path):
        await session.reply(r.BAD_SENDER_SYNTAX)
        return False
    if mail.size is not None and s.size_limit and mail.size > s.size_limit:
        session.sender = mail.sender  # for the log line only
        session.log_reject("MAIL", r.SIZE_EXCEEDS_LIMIT)
        session.sender = None
        await session.reply(r.SIZE_EXCEEDS_LIMIT)
        return False
    if not session.server.policy.delay_reject:  # smtpd_delay_reject = no: check now
        state = session.check_state()
        state.sender = mail.sender
        reject = await session.server.policy.check_mail(state)
        if reject is not None:
            await session.reply(reject)
            return False
    if (milters := milter.active(session)) is not None:
        session.milter_abort = True
        session.milter_sender = mail.sender
        session.milter_routes[0] = await milter.route(session, mail.sender)
        err = milter.check(session, await milters.mail(milter.args(arg, "from:")))
        if err is not None:
            session.reset()
            await session.reply(err)
            return False
    session.sender, session.mail, session.mail_line = mail.sender, mail, session.line
    session.conn.write(r.MAIL_OK)
    return True


async def do_rcpt(session: Session, arg: str) -> bool:
    s = session.s
    if session.sender is None:
        await session.reply(r.NEED_MAIL)
        return False
    if session.bdat_state is not None:
        await session.reply(r.RCPT_AFTER_BDAT)
        return False
    if arg[:3].lower() == "to:" and arg[3:].strip() and not await session.limits.rcpt():
        return False
    try:
        rcpt = parse_rcpt(arg, strict=s.strict_envelopes, dsn="DSN" not in session.discard)
    except ReplyError as exc:
        if exc.bad_address is not None:
            log.warning("Illegal address syntax from %s in RCPT command: %s",
                        session.namaddr, exc.bad_address)
        if exc.warning:
            log.warning("%s", exc.warning)
        await session.reply(exc.reply)
        return False
    smtputf8 = session.mail is not None and session.mail.smtputf8
    if not await check_addr(session, rcpt.address, smtputf8, "RCPT", rcpt.path,
                            session.sender):
        await session.reply(r.BAD_RECIPIENT_SYNTAX)
        return False
    if len(session.recipients) >= s.recipient_limit:
        await session.reply(r.TOO_MANY_RECIPIENTS)
        return False
    state = session.check_state(rcpt.address)
    if session.addr_reply is not None:  # one resolve per RCPT (smtpd_resolve_addr()'s cache)
        state.resolved[rcpt.address] = session.addr_reply
    reject = await session.server.policy.check_rcpt(state)
    if milter.active(session):
        reject = await milter.rcpt(session, rcpt.address, arg, reject)
    if reject is not None:
        if not reject.startswith("milter:"):
            session.log_reject("RCPT", reject, rcpt.address)
        reject = reject.removeprefix("milter:")
        await session.reply(reject)
        return False
    reject = await proxy_rcpt(session)  # smtpd_proxy_filter: the filter has its say
    if reject is not None:
        await session.reply(reject)
        return False
    session.recipients.append(rcpt)
    session.conn.write(r.RCPT_OK)
    return True


async def check_addr(session: Session, address: str, smtputf8: bool, verb: str, path: str,
                     sender: str = "") -> bool:
    """The address resolves to something usable (≈ smtpd_check_addr()): a valid
    domain after rewriting, and an ASCII domain unless the client said SMTPUTF8.
    The answer (for mail from ``sender``) stays in ``session.addr_reply`` for the
    restrictions, as Postfix's smtpd_resolve_addr() cache keeps it."""
    session.addr_reply = None
    if not address:
        return True
    if SURROGATES.search(address):
        return False  # not UTF-8 (smtputf8_enable = no): cannot be queued
    try:
        reply = await session.server.policy.resolver.resolve(address, sender)
    except TableRetry:
        return True  # the restrictions meet the same failure and answer 451
    session.addr_reply = reply
    domain = reply.recipient.rpartition("@")[2]
    if not reply.error and (smtputf8 or domain.isascii()):
        return True
    log.warning("Illegal address syntax from %s in %s command: %s", session.namaddr, verb,
                path)
    return False
