"""smtpd's side of the milters (≈ smtpd.c's milter calls and smtpd_milter.c).

Connect, HELO/EHLO, MAIL, RCPT, DATA and unknown commands go to the
smtpd_milters as they happen; the message goes at end of data, after
cleanup, and their modifications are applied before the queue write
(:mod:`postbus.cleanup.milter_edit`). Replies map as in check_milter_reply():
4xx/5xx are sent (``milter-reject`` logged), ``421`` ends the session, a
quarantine sets hold for the transaction (``milter-hold``), discard makes
the message vanish after ``250`` (``milter-discard``). A milter reject at
connect is the ``554 ... ESMTP not accepting connections`` greeting; at
HELO/EHLO only ``421`` is sent, other rejects persist for the commands
after it, as Postfix does for Sendmail compatibility.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from postbus.cleanup.milter_edit import MessageEdit, verdict
from postbus.maps.table import TableRetry
from postbus.milter import Milters
from postbus.queue.ids import new_queue_id
from postbus.smtp.address import quote_local

if TYPE_CHECKING:
    from ingress_smtpd.cleanup import Message
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")


def start(session: Session) -> Milters | None:
    settings = session.server.milters
    if not settings:
        return None
    return Milters(settings, lambda name: macro(session, name), log)


async def route(session: Session, address: str) -> tuple[str, str, str] | None:
    """(address, nexthop, transport) as trivial-rewrite resolves it, for the {mail_*} and
    {rcpt_*} macros (≈ smtpd_resolve_addr()); None when the tables cannot say."""
    try:
        reply = await session.server.policy.resolver.resolve(address)
    except TableRetry:
        return None
    return reply.recipient, reply.nexthop, reply.transport


async def connect(session: Session) -> str | None:
    """The milters' connect event: a reject is the greeting (≈ smtpd_proto())."""
    err = check(session, await session.milters.connect(  # type: ignore[union-attr]
        session.client_name, session.client_addr, session.conn.peer[1]))
    if err is not None and err[0] == "5":
        session.errors += 1
        return f"554 {session.s.myhostname} ESMTP not accepting connections"
    if err is not None and err.startswith("421"):
        session.access_denied = "421"
        return f"421 {session.s.myhostname} Service unavailable - try again later"
    return None


async def rcpt(session: Session, address: str, arg: str, reject: str | None) -> str | None:
    """The milters' RCPT event; a rejected recipient only to those asking for it.
    Returns the restrictions' ``reject``, or ``milter:`` and a milter's reply."""
    assert session.milters is not None
    session.milter_rcpt = (address, reject)
    session.milter_routes[1] = await route(session, address) if reject is None else None
    err = await session.milters.rcpt(args(arg, "to:"), rejected=reject is not None)
    err = check(session, err) if reject is None else None
    session.milter_rcpt = (address, None)
    if err is None and reject is None and not session.check_memory.queue_id:
        # Postfix opens the queue file (and so has the {i} macro) after the first
        # recipient the milters accepted
        session.check_memory.queue_id = new_queue_id(session.s.long_queue_ids)
    return reject if err is None else "milter:" + err


def active(session: Session) -> Milters | None:
    """The milters, unless a DISCARD (a milter's or an access map's) already decided
    this transaction (≈ smtpd.c's MILTER_SKIP_FLAGS)."""
    if session.milter_discard or session.check_memory.discard:
        return None
    return session.milters


def macro(session: Session, name: str) -> str | None:
    """A macro's value in this session (≈ smtpd_milter_eval())."""
    tls, auth = session.tls, session.auth
    if name == "_":
        return f"{session.client_name} [{session.client_addr}]"
    if name == "i":
        return session.check_memory.queue_id or None
    if name in ("{client_addr}", "{client_name}", "{client_ptr}"):
        return session.client_addr if name == "{client_addr}" else session.client_name
    if name == "{client_port}":
        return str(session.conn.peer[1])
    if name == "{client_resolve}":
        return "FAIL" if session.client_name == "unknown" else "OK"
    if name == "{daemon_addr}":
        return session.conn.local_addr()
    if name == "{tls_version}":
        return tls.protocol if tls else None
    if name == "{cipher}":
        return tls.cipher if tls else None
    if name == "{cipher_bits}":
        return str(tls.usebits) if tls else None
    if name == "{cert_subject}":
        return tls.peer_cn if tls and tls.peer_trusted else None
    if name == "{cert_issuer}":
        return tls.issuer_cn if tls and tls.peer_trusted else None
    if name == "{auth_type}":
        return auth.method
    if name in ("{auth_authen}", "{auth_author}"):
        return auth.username if name == "{auth_authen}" else None
    if name in ("{mail_addr}", "{mail_host}", "{mail_mailer}"):
        sender = session.sender if session.sender is not None else session.milter_sender
        if sender is None:
            return None
        if name == "{mail_addr}" and not sender:
            return ""
        return _routed(name, session.milter_routes[0])
    if name in ("{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"):
        rcpt, rejected = session.milter_rcpt
        if rcpt is None:
            return None
        if rejected:  # a rejected recipient: the reply, as Sendmail's error mailer
            status, _, text = rejected[4:].partition(" ")
            return {"{rcpt_addr}": text, "{rcpt_host}": status, "{rcpt_mailer}": "error"}[name]
        if name == "{rcpt_addr}" and not rcpt:
            return ""
        return _routed(name, session.milter_routes[1])
    return None


def _routed(name: str, resolved: tuple[str, str, str] | None) -> str | None:
    if resolved is None:
        return None
    if name.endswith("_addr}"):
        return quote_local(resolved[0]) if resolved[0] else ""
    return resolved[1] if name.endswith("_host}") else resolved[2]


def check(session: Session, reply: str | None) -> str | None:
    """≈ check_milter_reply(): log, and give the SMTP reply to send (None: go on)."""
    if reply is None:
        return None
    qid = session.check_memory.queue_id or "NOQUEUE"
    if reply[0] == "H":
        if session.milter_hold:
            return None
        session.milter_hold = reply[1:] or "milter triggers HOLD action"
        action, text, out = "milter-hold", session.milter_hold, None
    elif reply[0] == "D":
        if session.milter_discard:
            return None
        session.milter_discard = True
        action, text, out = "milter-discard", "milter triggers DISCARD action", None
    elif reply[0] == "S":
        action, text = "milter-reject", "421 4.7.0 Server closing connection"
        out = text
    elif reply[0] in "45":
        action, text, out = "milter-reject", reply, reply
    else:
        action, text = "reject", "421 4.3.5 Server configuration error"
        out = text
    text = text.replace("\r", "?").replace("\n", "?")  # as Postfix's logging prints them
    log.info("%s: %s: %s from %s: %s;%s", qid, action, session.where, session.namaddr, text,
             whatsup(session))
    return out


def whatsup(session: Session) -> str:
    """≈ smtpd_whatsup()."""
    out = ""
    sender = session.sender if session.sender is not None else session.milter_sender
    if sender is not None:
        out += f" from=<{quote_local(sender)}>"
    if session.milter_rcpt[0] is not None:
        out += f" to=<{quote_local(session.milter_rcpt[0])}>"
    out += f" proto={session.protocol}"
    if session.helo:
        out += f" helo=<{session.helo}>"
    return out


def args(arg: str, keyword: str) -> list[str]:
    """``FROM:<a> SIZE=1`` -> ``["<a>", "SIZE=1"]``, as smtpd's milter_argv()."""
    return arg[len(keyword):].strip().split()


async def message(session: Session, msg: Message) -> str | None:
    """The message to every milter; their edits applied to ``msg``. Returns the reply to
    send instead of queueing, "" when the message is to be discarded, None to queue."""
    milters = session.milters
    assert milters is not None and msg.queued is not None
    cleanup = session.server.cleanup
    entry = msg.entry()
    entry.queue_id = session.check_memory.queue_id
    content = msg.build(entry)
    state = cleanup.begin(queue_id=entry.queue_id, context=session.header_context,
                          mapping=cleanup.mapping)
    edit = MessageEdit(content, msg.sender, msg.queued, state, hidden=1)
    reply = await milters.message(edit.content, edit)
    if edit.changed or edit.sender != msg.sender:
        msg.frozen = edit.message()
    msg.frozen = msg.frozen or content
    msg.sender = edit.sender
    if not msg.queued and reply is None:  # every recipient deleted: nothing to deliver
        log.info("%s: milter deleted every recipient", entry.queue_id)
        return ""
    if session.milter_hold:
        msg.hold = True
    if reply is None or (reply[0] == "H" and session.milter_hold):  # held already: once
        return None
    last = msg.queued[-1].address if msg.queued else None
    kind, out = verdict(reply, queue_id=entry.queue_id, event="END-OF-MESSAGE",
                        client=session.namaddr, sender=msg.sender, recipient=last,
                        proto=session.protocol, helo=session.helo)
    if kind == "hold":
        msg.hold = True
        return None
    return "" if kind == "discard" else out


async def other(session: Session, tls: bool = False) -> bool:
    """VRFY, ETRN, STARTTLS, AUTH: a milter's persisting reject (≈ milter_other_event());
    True when the command was answered. ``tls``: STARTTLS and AUTH, where a 4xx is
    ``454 4.3.0 Try again later`` (Sendmail compatibility)."""
    if session.milters is None:
        return False
    err = session.milters.other()
    if err is None or err[0] not in "45":
        return False
    await session.reply("454 4.3.0 Try again later" if tls and err[0] == "4" else err)
    return True
