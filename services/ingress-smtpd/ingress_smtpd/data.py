"""DATA and the queue write both DATA and BDAT end in (≈ smtpd.c's data_cmd() and
common_post_message_handling()).

The message goes through Postfix's cleanup (:mod:`postbus.cleanup`), then
into the queue; ``250`` only once JetStream has acknowledged it. Whatever
fails on the way (cleanup's own refusals, a bug, NATS down, a timeout) is
a reply, never a lost or half-queued message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from ingress_smtpd.auth import log_fields
from ingress_smtpd.cleanup import Message, carry
from ingress_smtpd.proxy_filter import proxy_data, proxy_message
from ingress_smtpd.xforward import apply as forwarded
from ingress_smtpd.xforward import orig_fields
from postbus import metrics
from postbus.cleanup import CleanupError, MessageDiscarded
from postbus.cleanup.status import WRITE_ERROR
from postbus.queue.ids import new_queue_id
from postbus.smtp import replies as r
from postbus.smtp.dotstuff import unstuff

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")
cleanup_log = logging.getLogger("postbus.cleanup")  # logged as postbus/cleanup, as Postfix does


async def do_data(session: Session, arg: str) -> bool:
    if session.bdat_state is not None:
        await session.reply(r.DATA_AFTER_BDAT)
        return False
    if not session.recipients:
        await session.reply(r.NEED_RCPT if session.sender is None else r.NO_VALID_RECIPIENTS)
        return False
    if arg:
        await session.reply(r.DATA_SYNTAX)
        return False
    policy = session.server.policy
    reject = await policy.check_data(session.check_state()) if policy.data else None
    if reject is None and (milters := milter.active(session)) is not None:
        reject = milter.check(session, await milters.data())
    if reject is None:
        reject = await proxy_data(session)  # smtpd_proxy_filter: the filter goes first
    if reject is not None:
        await session.reply(reject)
        return False
    session.conn.write(r.DATA_GO_AHEAD)
    raw, _size = await session.conn.read_data(session.s.size_limit)
    session.where = "END-OF-MESSAGE"
    if raw is None:
        log.warning("NOQUEUE: queue file size limit exceeded")
        session.reset()
        await session.reply(r.MESSAGE_TOO_BIG)
        return False
    ok = await queue_message(session, unstuff(raw), r.QUEUED)
    session.reset()
    return ok


async def queue_message(session: Session, content: bytes, reply: str, size: int = 0) -> bool:
    """Cleanup and the queue write of the transaction's message (CRLF ``content``),
    then ``reply`` (formatted with queue_id and size)."""
    assert session.sender is not None and session.mail is not None
    s, server = session.s, session.server
    # the restrictions' view only when smtpd_end_of_data_restrictions has a use for it
    state = session.check_state() if server.policy.eod else None
    memory = session.check_memory
    memory.queue_id = memory.queue_id or new_queue_id(s.long_queue_ids)
    if state is not None:
        state.queue_id, state.size = memory.queue_id, size or len(content)
    if memory.prepend:  # PREPEND: after our Received:, before the client's headers
        content = "".join(h + "\r\n" for h in memory.prepend).encode(
            "utf-8", "surrogateescape") + content
    tls_lines: list[str] = []
    if session.tls is not None and s.tls.received_header:
        tls_lines = session.tls.received(s.tls.ask_ccert)
    message = Message(
        sender=session.sender, mail=session.mail, recipients=session.recipients,
        content=content, client_name=session.client_name, client_addr=session.client_addr,
        helo=session.helo, protocol=session.protocol, myhostname=s.myhostname,
        mail_name=s.mail_name, header_size_limit=s.header_size_limit,
        add_missing=session.add_missing, long_queue_ids=s.long_queue_ids,
        tls=session.tls is not None, tls_lines=tls_lines,
        sasl_username=session.auth.username, sasl_header=s.auth.header,
    )
    if session.proxy is not None:  # smtpd_proxy_filter: the filter queues it, or not
        return await proxy_message(session, message.received(""), message.content)
    try:
        cleanup = server.cleanup
        qid = "NOQUEUE"
        if cleanup.filter:  # the checks' log lines name the message: as Postfix, whose
            qid = memory.queue_id  # queue file is open before DATA
            log.info("%s: client=%s%s", qid, session.namaddr, orig_fields(session))
        cstate = cleanup.begin(queue_id=qid, context=session.header_context,
                               mapping=cleanup.mapping)
        carry(cstate, memory, cleanup.content_filter, message)  # HOLD, FILTER, ... actions
        await message.rewrite(cstate, filter=cleanup.filter)
        refused = await milter.message(session, message) if milter.active(session) else None
    except MessageDiscarded:  # DISCARD: the client is told it was queued
        session.conn.write(reply.format(queue_id=message.queue_id, size=size))
        return True
    except CleanupError as exc:
        await session.reply(exc.reply)
        return False
    except Exception:  # a bug must not cost the message silently, nor the session
        log.error("cleanup of a message from %s failed", session.namaddr, exc_info=True)
        await session.reply(WRITE_ERROR)
        return False
    if refused:  # a milter's reject or tempfail at end of message
        await session.reply(refused)
        return False
    if refused == "" or session.milter_discard:  # a milter's DISCARD
        session.conn.write(reply.format(queue_id=memory.queue_id, size=size))
        session.errors = session.junk = 0
        return True
    # smtpd_end_of_data_restrictions: after cleanup took the message, before 250
    reject = await server.policy.check_eod(state) if state is not None else None
    if reject is not None:
        await session.reply(reject)
        return False
    if memory.discard:  # DISCARD: claim success, keep nothing
        session.conn.write(reply.format(queue_id=memory.queue_id, size=size))
        session.errors = session.junk = 0
        return True
    entry = message.entry()
    forwarded(session, entry)  # XFORWARD: the original client
    entry.queue_id = memory.queue_id  # the ID the policy server and the log saw, if still free
    started = time.perf_counter()
    try:
        async with asyncio.timeout(s.queue_timeout):
            qid = await server.writer(entry, lambda _qid: message.build(entry))
    except Exception as exc:  # NATS down, timeout, anything: never 250
        log.warning("queue file write error from %s: %s", session.namaddr,
                    exc.__class__.__name__ if not str(exc) else exc)
        await session.reply(r.QUEUE_WRITE_ERROR)
        return False
    metrics.smtpd_queue_write_seconds.observe(time.perf_counter() - started)
    server.accepted.inc()
    server.sizes.observe(entry.size)
    if qid != message.queue_id:
        log.info("%s: client=%s%s%s", qid, session.namaddr, log_fields(session),
                 orig_fields(session))
    cleanup_log.info("%s: message-id=%s", qid, message.message_id or "<>")
    session.conn.write(reply.format(queue_id=qid, size=size))
    session.errors = session.junk = 0  # a message received forgives earlier errors
    return True
