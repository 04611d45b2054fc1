"""HELO and EHLO, and which ESMTP keywords a client gets (≈ smtpd.c's helo_cmd(), ehlo_cmd()).

The keywords are Postfix 3.7's, in its order; smtpd_discard_ehlo_keywords
takes some away for everyone, smtpd_discard_ehlo_keyword_address_maps per
client address (looked up once per connection, as Postfix does). What is
discarded is also refused: DSN parameters, SMTPUTF8, STARTTLS, BDAT.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.auth import ehlo_keywords
from ingress_smtpd.xforward import ehlo_keyword
from postbus.maps.table import TableRetry
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")
_SURROGATES = re.compile("[\udc80-\udcff]")


async def discard_keywords(session: Session) -> None:
    """The client's own discard list, from smtpd_discard_ehlo_keyword_address_maps. A table
    that cannot answer leaves the default list, and EHLO then ends the session with
    Postfix's ``421 4.3.0 ... Server local data error``."""
    maps = session.s.discard_maps
    if maps is None:
        return
    try:
        words = await maps.find(session.client_addr)
    except TableRetry as exc:
        log.warning("%s", exc)
        session.discard_failed = True
        return
    if words is not None:
        session.discard = r.discard_mask(words)


async def do_helo(session: Session, arg: str, esmtp: bool = False) -> bool:
    if not arg:
        await session.reply(r.EHLO_SYNTAX if esmtp else r.HELO_SYNTAX)
        return False
    # Without smtputf8_enable undecodable bytes get this far; keep them printable
    # (≈ printable()) so the queue entry stays valid UTF-8.
    helo = _SURROGATES.sub("?", " ".join(arg.split()))
    if not session.server.policy.delay_reject:  # smtpd_delay_reject = no: check now
        state = session.check_state()
        state.helo = helo
        reject = await session.server.policy.check_helo(state)
        if reject is not None:
            await session.reply(reject)
            return False
    err = None
    if (milters := milter.active(session)) is not None:  # a reject but 421 persists (Sendmail)
        saved, session.helo = session.helo, helo
        err = milter.check(session, await milters.helo(helo))
        session.helo = saved
        if err is not None and err.startswith("421"):
            await session.reply(err)
            return False
    session.reset()
    session.helo = helo
    session.protocol = "ESMTP" if esmtp else "SMTP"
    s = session.s
    if not esmtp:
        session.conn.write(r.HELO_OK.format(host=s.myhostname))
        return True
    if err is not None and err[0] == "5":  # a milter said no: ENHANCEDSTATUSCODES only
        session.conn.write(r.multiline(250, [s.myhostname, "ENHANCEDSTATUSCODES"]))
        return True
    if session.discard and "SILENT-DISCARD" not in session.discard:
        log.info("discarding EHLO keywords: %s", r.discard_text(session.discard))
    if session.discard_failed:
        log.warning("don't know what EHLO features to announce to %s", session.namaddr)
        raise TableRetry("")  # logged above; the session ends with 421
    lines = r.ehlo_lines(s.myhostname, s.size_limit, vrfy=not s.disable_vrfy,
                         discard=session.discard, smtputf8=s.smtputf8,
                         starttls=s.tls.use_tls and session.tls is None,
                         auth=(*await ehlo_keywords(session), *await ehlo_keyword(session)))
    session.conn.write(r.multiline(250, lines))
    return True


async def do_ehlo(session: Session, arg: str) -> bool:
    return await do_helo(session, arg, esmtp=True)
