"""The SMTP/LMTP conversation (≈ smtp_proto.c, smtp_trouble.c).

:func:`handshake` reads the greeting, says EHLO (HELO as fallback) or
LHLO and applies the TLS level; :func:`transfer` runs one mail
transaction and returns one :class:`~postbus.delivery.Outcome` per
recipient. Reasons read exactly as Postfix writes them::

    host mx[10.0.0.1] said: 550 5.1.1 <u@d>: unknown (in reply to RCPT TO command)
    lost connection with mx[10.0.0.1] while sending message body
    conversation with mx[10.0.0.1] timed out while sending MAIL FROM
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from delivery_smtp.sasl_auth import SaslStart, Who
from delivery_smtp.session import Chat, HandshakeFailed, Lost, TimedOut, message_data
from delivery_smtp.settings import Settings
from delivery_smtp.tls_client import ClientTls, Peer
from delivery_smtp.tls_policy import PROBLEM, TlsPolicy
from delivery_smtp.xforward import REQUESTS, STATES
from delivery_smtp.xforward import commands as xforward_commands
from postbus.delivery import Outcome, soften
from postbus.queue.entry import DeliveryJob, Recipient
from postbus.smtp import dotstuff, xtext
from postbus.smtp.address import quote_local
from postbus.smtp.downgrade import downgrade
from postbus.smtp.reply import Reply
from postbus.tls import TlsConfigError

log = logging.getLogger("postbus.delivery")
_HEADER_END = re.compile(rb"\n\r?\n")


class SiteFailure(Exception):
    """The session cannot go on; ``outcome`` applies to every recipient still open.

    ``plaintext_ok``: the TLS handshake failed at level may, where Postfix may
    try the same server again without TLS."""

    def __init__(self, outcome: Outcome, relay: str = "none", plaintext_ok: bool = False) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome
        self.relay = relay
        self.plaintext_ok = plaintext_ok


NO_TLS = Outcome("deferred", "4.7.5", "Cannot start TLS: handshake failure")


def said(chat: Chat, reply: Reply, request: str) -> str:
    return f"host {chat.namaddr} said: {reply} (in reply to {request})"


def broken(chat: Chat, exc: Exception, where: str) -> Outcome:
    """The 4.4.2 outcome for a lost or timed-out conversation."""
    if isinstance(exc, TimedOut):
        text = f"conversation with {chat.namaddr} timed out while {where}"
    else:
        text = f"lost connection with {chat.namaddr} while {where}"
    return Outcome("deferred", "4.4.2", text)


def _refused(chat: Chat, reply: Reply, soft: bool = False) -> SiteFailure:
    dsn = soften(reply.dsn) if soft else reply.dsn
    text = f"host {chat.namaddr} refused to talk to me: {reply}"
    return SiteFailure(Outcome.by_dsn(dsn, text), chat.relay)


# -- handshake ------------------------------------------------------------------


@dataclass(frozen=True)
class TlsStart:
    """The TLS policy of the next hop being tried, and who enforces it."""

    policy: TlsPolicy
    client: ClientTls
    nexthop: str  # the next-hop domain, for the nexthop and dot-nexthop patterns
    verdict: list[str] | None = None  # MTA-STS: the RFC 8460 result type of each session


def _note(tls: TlsStart, result: str) -> None:
    if tls.verdict is not None:
        tls.verdict.append(result)


async def handshake(
    chat: Chat, st: Settings, tls: TlsStart | None = None, sasl: SaslStart | None = None
) -> None:
    """Greeting, EHLO/HELO or LHLO, STARTTLS, AUTH; raises SiteFailure (≈ smtp_helo())."""
    where = "receiving the initial server greeting"
    try:
        where, verified = await _greet(chat, st, tls)
        if sasl is not None:  # a failure in AUTH is told as one in the last EHLO
            who = Who(sasl.sender, chat.target.host, sasl.dest)
            failed = await sasl.client.login(chat, who, st.helo_timeout, verified)
            if failed is not None:
                raise SiteFailure(failed, chat.relay)
    except (Lost, TimedOut) as exc:
        raise SiteFailure(broken(chat, exc, where), chat.relay) from exc


async def _greet(chat: Chat, st: Settings, tls: TlsStart | None) -> tuple[str, bool]:
    """Greeting, hello and STARTTLS: what is being done, and whether the server
    certificate was verified (smtp_sasl_tls_verified_security_options)."""
    where = "receiving the initial server greeting"
    try:
        greeting = await chat.greeting(st.helo_timeout)
        if greeting.code // 100 != 2:
            raise _refused(chat, greeting, soft=st.skip_5xx_greeting)
        where = await _hello(chat, st)
        if tls is None or tls.policy.level == "none":
            return where, False
        policy = tls.policy
        if "starttls" not in chat.features:
            _note(tls, "starttls-not-supported")
            if policy.required:
                text = f"TLS is required, but was not offered by host {chat.namaddr}"
                raise SiteFailure(Outcome("deferred", "4.7.4", text), chat.relay)
            return where, False
        try:
            context, native = tls.client.context(policy)
        except TlsConfigError as exc:
            log.warning("%s", exc)
            if policy.required:
                raise SiteFailure(PROBLEM, chat.relay) from exc
            return where, False
        where = "performing the STARTTLS handshake"
        sni = {"hostname": chat.target.host, "nexthop": tls.nexthop}.get(policy.sni, policy.sni)
        try:
            got = await chat.starttls(context, sni, st.starttls_timeout)
        except HandshakeFailed as exc:  # ≈ smtp_start_tls() when tls_client_start() fails
            log.info("SSL_connect error to %s: %s", chat.relay, exc)
            _note(tls, "validation-failure")
            raise SiteFailure(NO_TLS, chat.relay, plaintext_ok=not policy.required) from exc
        if got.code != 220:
            _note(tls, "starttls-not-supported")
            if policy.required:
                text = f"TLS is required, but host {chat.namaddr} refused to start TLS: {got}"
                raise SiteFailure(Outcome("deferred", "4.7.5", text), chat.relay)
            return where, False
        transport = chat.wire.transport
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        verified = False
        if sslobj is not None:
            peer = Peer(chat.relay, chat.target.host, tls.nexthop)
            failed = tls.client.check(sslobj, native, policy, peer, tls.verdict)
            if failed is not None:
                raise SiteFailure(failed, chat.relay)
            verified = policy.must_match
        return await _hello(chat, st), verified
    except (Lost, TimedOut) as exc:
        raise SiteFailure(broken(chat, exc, where), chat.relay) from exc


async def _hello(chat: Chat, st: Settings) -> str:
    verb = "LHLO" if st.lmtp else "EHLO"
    got = await chat.hello(verb, st.helo_name, st.helo_timeout)
    if got.code // 100 == 2:
        return f"performing the {verb} handshake"
    if st.lmtp or got.code == 421:
        raise _refused(chat, got)
    got = await chat.hello("HELO", st.helo_name, st.helo_timeout)
    if got.code // 100 != 2:
        raise _refused(chat, got)
    return "performing the HELO handshake"


# -- the mail transaction -------------------------------------------------------------


def _mail_command(
    chat: Chat, job: DeliveryJob, size: int | None, utf8: bool, eight_bit: bool
) -> bytes:
    """MAIL FROM; no SIZE for content about to be downgraded, as Postfix (its size changes)."""
    args = [f"MAIL FROM:<{quote_local(job.sender)}>" if job.sender else "MAIL FROM:<>"]
    if "size" in chat.features and size is not None:
        args.append(f"SIZE={size}")
    if eight_bit and "8bitmime" in chat.features:
        args.append("BODY=8BITMIME")
    if utf8:
        args.append("SMTPUTF8")
    if "dsn" in chat.features:
        if job.ret:
            args.append(f"RET={job.ret}")
        if job.env_id:
            args.append(f"ENVID={xtext.encode(job.env_id)}")
    return (" ".join(args) + "\r\n").encode()


def smtputf8(job: DeliveryJob, content: bytes) -> tuple[bool, bool]:
    """Whether SMTPUTF8 was requested, and whether delivery requires it (≈ Postfix's
    SMTPUTF8_FLAG_REQUESTED and DELIVERY_REQUIRES_SMTPUTF8()).

    Requested: the sender said SMTPUTF8 (MAIL FROM, ``sendmail -SMTPUTF8``), or the
    envelope is not ASCII (a job of a version without the flag, or an address that
    rewriting made UTF-8: Postfix would send that without SMTPUTF8, against RFC 6531).
    Required: requested, and the envelope is UTF-8 or a header is not ASCII. MAIL FROM says
    SMTPUTF8 whenever it was requested and the server offers it."""
    envelope = not (job.sender.isascii() and all(r.address.isascii() for r in job.recipients))
    if envelope:
        return True, True
    if not job.smtputf8:
        return False, False
    end = _HEADER_END.search(content)
    headers = content if end is None else content[: end.start()]
    return True, not headers.isascii()  # any 8-bit header: SMTPUTF8_FLAG_HEADER


def _rcpt_command(chat: Chat, rcpt: Recipient) -> bytes:
    words = [f"RCPT TO:<{quote_local(rcpt.address)}>"]
    if "dsn" in chat.features:
        if rcpt.notify:
            words.append(f"NOTIFY={rcpt.notify}")
        if rcpt.orig_rcpt:
            words.append(f"ORCPT=rfc822;{xtext.encode(rcpt.orig_rcpt)}")
    return (" ".join(words) + "\r\n").encode()


async def _rset(chat: Chat, st: Settings) -> None:
    """End an aborted transaction so the session can be reused; a failure spoils it."""
    try:
        if (await chat.command(b"RSET", timeout=st.rset_timeout)).code // 100 != 2:
            chat.broken = True
    except (Lost, TimedOut):
        chat.broken = True


async def probe(chat: Chat, st: Settings) -> bool:
    """RSET before reusing a cached session: is it still alive and in sync?

    Postfix does the same (smtp_reuse.c: "Send an RSET probe to verify that
    the session is still good"), as its own round trip before the next MAIL."""
    await _rset(chat, st)
    return not chat.broken and chat.connected


def _final(chat: Chat, got: Reply) -> Outcome:
    reason = str(got) if got.code // 100 == 2 else said(chat, got, "end of DATA command")
    return Outcome.from_reply(got, reason)


async def transfer(chat: Chat, st: Settings, job: DeliveryJob, content: bytes, *,
                   last: bool = False) -> list[Outcome]:
    """MAIL, RCPT per recipient, DATA, body; one outcome per job recipient (≈ smtp_xfer()).

    When the server offers PIPELINING, MAIL, every RCPT and DATA go out in one
    write and the replies are then read in order, each with its own time
    limit and its own "while ..." text, as Postfix's receiver loop does.
    Postfix's course corrections apply once all those replies are in: a
    rejected MAIL FROM fails every recipient and the RCPT replies that follow
    are read but ignored; a rejected DATA is followed by RSET; a DATA that
    was accepted although no recipient was gets just "." (an empty message,
    RFC 2197), never the content, and the reply to it is ignored. Without
    PIPELINING each command waits for its reply, and RSET ends the
    transaction as soon as it cannot succeed. When the session ends after
    this message (``last``: not cached) and the server pipelines, QUIT goes
    out with the end of data, as Postfix's smtp_loop() sends it; the reply to
    the "." still decides, and the one to QUIT is read as the session closes.
    """
    count = len(job.recipients)
    out: list[Outcome | None] = [None] * count
    utf8, required = smtputf8(job, content)
    limit = chat.features.get("size", "")
    if limit.isdigit() and 0 < int(limit) < len(content):
        text = (
            f"message size {len(content)} exceeds size limit {limit} of server {chat.namaddr}"
        )
        return [Outcome("bounced", "5.3.4", text)] * count
    if required and "smtputf8" not in chat.features:
        text = f"SMTPUTF8 is required, but was not offered by host {chat.namaddr}"
        return [Outcome("bounced", "5.6.7", text)] * count
    pipelining = "pipelining" in chat.features
    if "smtputf8" in chat.features and "8bitmime" not in chat.features:
        log.info("host %s offers SMTPUTF8 support, but not 8BITMIME", chat.namaddr)
        chat.features["8bitmime"] = ""
    eight_bit = not content.isascii()
    size: int | None = len(content)
    if eight_bit and "8bitmime" not in chat.features and st.mime_conversion:
        content, size = downgrade(content, st.nesting_limit), None  # ≈ SMTP_MIME_DOWNGRADE
    mail = _mail_command(chat, job, size, utf8 and "smtputf8" in chat.features, eight_bit)
    rcpts = [_rcpt_command(chat, rcpt) for rcpt in job.recipients]
    forward = xforward_commands(chat.features.get("xforward", ""), job) if (
        st.send_xforward and "xforward" in chat.features) else []
    where = "sending MAIL FROM"
    accepted: list[int] = []
    try:
        if pipelining:
            chat.write(b"".join([*(line for _, line in forward), mail, *rcpts, b"DATA\r\n"]))
        for index, line in forward:
            where = STATES[index]
            if not pipelining:
                chat.write(line)
            got = await chat.reply(st.xforward_timeout)
            if got.code // 100 != 2:  # Postfix warns and goes on
                log.warning("host %s said: %s (in reply to %s)", chat.relay, got,
                            REQUESTS[index])
        where = "sending MAIL FROM"
        if not pipelining:
            chat.write(mail)
        got = await chat.reply(st.mail_timeout)
        mail_ok = got.code // 100 == 2
        if not mail_ok:
            out = [Outcome.from_reply(got, said(chat, got, "MAIL FROM command"))] * count
            if not pipelining:
                await _rset(chat, st)
                return _done(out)
        where = "sending RCPT TO"
        for i, rcpt in enumerate(rcpts):
            if not pipelining:
                chat.write(rcpt)
            got = await chat.reply(st.rcpt_timeout)
            if not mail_ok:
                continue  # every recipient already failed with MAIL FROM
            if got.code // 100 == 2:
                accepted.append(i)
            else:
                out[i] = Outcome.from_reply(got, said(chat, got, "RCPT TO command"))
        if not pipelining and not accepted:
            await _rset(chat, st)
            return _done(out)
        where = "sending DATA command"
        if not pipelining:
            chat.write(b"DATA\r\n")
        got = await chat.reply(st.data_init_timeout)
        if got.code // 100 != 3:
            for i in accepted:
                out[i] = Outcome.from_reply(got, said(chat, got, "DATA command"))
            await _rset(chat, st)
        elif not accepted:  # pipelined DATA accepted with nobody to send to
            where = "sending end of data -- message may be sent more than once"
            await chat.send(dotstuff.END, st.data_xfer_timeout)
            await chat.reply(st.data_done_timeout)
        else:
            where = "sending message body"
            data, folded = message_data(content, st.line_limit)
            if folded:
                log.info("%s: breaking line > %d bytes with <CR><LF>SPACE",
                         job.queue_id, st.line_limit)
            if last and pipelining:
                data += b"QUIT\r\n"
                chat.quit_sent = True
            await chat.send(data, st.data_xfer_timeout)
            where = "sending end of data -- message may be sent more than once"
            if st.lmtp:  # one reply per accepted recipient, in RCPT order
                for i in accepted:
                    out[i] = _final(chat, await chat.reply(st.data_done_timeout))
            else:
                got = await chat.reply(st.data_done_timeout)
                for i in accepted:
                    out[i] = _final(chat, got)
    except (Lost, TimedOut) as exc:
        chat.broken = True
        failure = broken(chat, exc, where)
        out = [o or failure for o in out]
    return _done(out)


def _done(out: list[Outcome | None]) -> list[Outcome]:
    return [o or Outcome("deferred", "4.3.0", "no outcome") for o in out]
