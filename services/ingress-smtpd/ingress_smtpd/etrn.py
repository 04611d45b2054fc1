"""ETRN (RFC 1985): flush the deferred mail of one site (≈ smtpd.c's etrn_cmd() + flush_clnt.c).

The order is Postfix's: HELO first when smtpd_helo_required, no MAIL
transaction open, one argument (a leading ``@`` or ``#`` dropped), a valid
host name or address literal, the restrictions (the client and helo lists,
then smtpd_etrn_restrictions), and the site must be in fast_flush_domains.
Then the qmgr, which alone changes queue state, is asked to make that
site's deferred mail due now, the same ``send_site`` command postqueue -s
sends (:mod:`postbus.queue.commands`); its answer becomes Postfix's reply:
``250 Queuing started``, or ``459``/``458``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from postbus.maps.table import TableRetry
from postbus.queue import commands
from postbus.smtp import replies as r
from postbus.smtp.address import valid_domain

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")

#: Asks for a flush of one site: "ok", "deny" (not eligible), "bad" (the flush
#: service refused the request) or "fail" (no flush service answered).
FlushRequest = Callable[[str], Awaitable[str]]
FLUSH_TIMEOUT = 10.0


def flush_over_bus(nc: NATS) -> FlushRequest:
    """The qmgr's flush service on the bus (postqueue -s's request)."""

    async def flush(site: str) -> str:
        return await commands.request(nc, commands.SEND_SITE, timeout=FLUSH_TIMEOUT, site=site)

    return flush


def etrn_site(arg: str) -> str | None:
    """The site an ETRN argument names, or None when it is no host name or literal."""
    site = arg[1:] if arg[:1] in ("@", "#") else arg
    if not site.isascii() or site.endswith(".") or not valid_domain(site):
        return None
    return site


async def do_etrn(session: Session, arg: str) -> bool:
    s = session.s
    if s.helo_required and not session.helo:
        await session.reply(r.ETRN_NEED_HELO)
        return False
    if await milter.other(session):
        return False
    if session.sender is not None:
        await session.reply(r.ETRN_IN_TRANSACTION)
        return False
    words = arg.split()
    if len(words) != 1:
        await session.reply(r.ETRN_SYNTAX)
        return False
    site = etrn_site(words[0])
    if site is None:
        await session.reply(r.ETRN_BAD_DOMAIN)
        return False
    state = session.check_state()
    state.etrn = site
    reject = await session.server.policy.check_etrn(state)
    if reject is not None:
        session.log_reject("ETRN", reject)
        await session.reply(reject)
        return False
    status = await _flush_site(session, site)
    if status == "ok":
        session.conn.write(r.ETRN_OK)
        return True
    if status == "deny":
        log.warning("reject: ETRN %.100s... from %s", site, session.namaddr)
        await session.reply(r.ETRN_UNAVAILABLE.format(domain=site))
    elif status == "bad":
        log.warning("bad ETRN %.100s... from %s", site, session.namaddr)
        await session.reply(r.ETRN_UNABLE)
    else:
        log.warning("unable to talk to fast flush service")
        await session.reply(r.ETRN_UNABLE)
    return False


async def _flush_site(session: Session, site: str) -> str:
    """flush_send_site(): only sites in fast_flush_domains, then the flush service."""
    try:
        eligible = await session.s.fast_flush.matches(site)
    except TableRetry as exc:
        log.warning("fast_flush_domains lookup failure: %s", exc)
        return "fail"
    if not eligible:
        return "deny"
    flush = session.server.flush
    return await flush(site) if flush is not None else "fail"
