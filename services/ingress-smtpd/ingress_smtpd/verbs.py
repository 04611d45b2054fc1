"""The verbs with no module of their own: RSET, NOOP, QUIT, VRFY and unknown
commands (≈ smtpd.c's rset_cmd(), noop_cmd(), quit_cmd(), vrfy_cmd())."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.envelope import check_addr
from postbus.smtp import replies as r
from postbus.smtp.address import parse_address, split_args

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")


class Quit(Exception):
    """End the session after the replies written so far."""


async def unknown(session: Session, arg: str) -> bool:
    if session.milters is not None:  # the verb (smtpd's tokenized buffer); only a 4xx is
        # sent, our "502 ... command not recognized" is not overridden (≈ smtpd.c)
        err = await session.milters.unknown(session.line.strip(" \t").split(" ")[0])
        if err is not None and err[0] == "4":
            await session.reply(err)
            return False
        if err is not None and err[0] not in "HDS5":
            log.warning("unexpected SMFIC_UNKNOWN response: %s", err)
    await session.reply(r.UNRECOGNIZED)
    return False


async def do_rset(session: Session, arg: str) -> bool:
    if arg:
        await session.reply(r.RSET_SYNTAX)
        return False
    session.reset()
    session.conn.write(r.OK)
    return True


async def do_noop(session: Session, arg: str) -> bool:
    session.conn.write(r.OK)
    return True


async def do_quit(session: Session, arg: str) -> bool:
    session.conn.write(r.BYE)
    raise Quit


async def do_vrfy(session: Session, arg: str) -> bool:
    s = session.s
    if s.disable_vrfy:
        await session.reply(r.VRFY_DISABLED)
        return False
    tokens = split_args(arg)
    smtputf8 = len(tokens) > 1 and tokens[-1].upper() == "SMTPUTF8" \
        and s.smtputf8 and "SMTPUTF8" not in session.discard
    if smtputf8:
        tokens.pop()
    if not tokens:
        await session.reply(r.VRFY_SYNTAX)
        return False
    if not await session.limits.rcpt():
        return False
    if await milter.other(session):
        return False
    try:
        address = parse_address(tokens[0]) if len(tokens) == 1 else ""
    except ValueError:
        address = ""
    if not address:
        log.warning("Illegal address syntax from %s in VRFY command: %s", session.namaddr, arg)
        await session.reply(r.BAD_RECIPIENT_SYNTAX)
        return False
    if not await check_addr(session, address, smtputf8, "VRFY", tokens[0]):
        await session.reply(r.BAD_RECIPIENT_SYNTAX)
        return False
    reject = await session.server.policy.check_rcpt(session.check_state(address))
    if reject is not None:
        session.log_reject("VRFY", reject, address)
        await session.reply(reject)
        return False
    session.conn.write(r.VRFY_OK.format(address=tokens[0]))
    return True
