"""What the restrictions see and remember (≈ the SMTPD_STATE fields smtpd_check.c reads).

:class:`CheckState` is one evaluation's view of the session: the client,
the HELO name, the envelope, the stage (``where``) and, for the policy
client, everything Postfix sends a policy server.  :class:`CheckMemory`
lives as long as the session: the defer_if_permit flag each stage left
(Postfix's defer_if_permit_client/_helo/_sender), and the actions access
tables and policy servers asked for the transaction (PREPEND, DISCARD,
HOLD, FILTER, REDIRECT, BCC: cleanup carries these to the queue entry).

A rejection passes through :func:`finish` as in smtpd_check_reject():
warn_if_reject turns it into a ``reject_warning`` log line, an earlier
defer_if_reject turns a 5xx into that 4xx, and the DSN class follows the
reply code.  :func:`whatsup` writes Postfix's log_whatsup() line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from postbus.smtp import replies as r
from postbus.smtp.address import quote_local

if TYPE_CHECKING:
    from postbus.resolve import ResolveReply
    from postbus.tls_session import TlsSession

log = logging.getLogger("postbus.smtpd")

PERMIT: Final = "PERMIT"
DATA: Final = "Data command"
END_OF_DATA: Final = "End-of-data"


class ServerError(Exception):
    """reject_server_error(): a configuration error found while evaluating; the text,
    when any, is logged as a warning, the client gets ``451 4.3.5``."""


@dataclass
class CheckMemory:
    """Per session: what earlier stages left for later ones."""

    dip_client: str | None = None  # defer_if_permit raised by the client stage
    dip_helo: str | None = None
    dip_sender: str | None = None
    prepend: list[str] = field(default_factory=list)  # headers, per transaction
    discard: str = ""  # the log text of a DISCARD action, per transaction
    hold: bool = False  # a HOLD action, per transaction
    filter: str = ""  # the last FILTER action's transport:destination, per transaction
    redirect: str = ""  # the last REDIRECT action's address, per transaction
    bcc: list[str] = field(default_factory=list)  # BCC actions' addresses, per transaction
    instance: str = ""  # the policy protocol's instance attribute, per transaction
    peer_status: str = ""  # "name_status reverse_status" of an unknown client, per session
    queue_id: str = ""  # drawn once a recipient is accepted: the message will be queued so

    def reset_transaction(self) -> None:
        self.prepend = []
        self.discard = self.instance = self.queue_id = self.filter = self.redirect = ""
        self.hold = False
        self.bcc = []


@dataclass
class CheckState:
    """One evaluation's view of the session."""

    client_name: str
    client_addr: str
    helo: str = ""
    sender: str | None = None
    recipient: str = ""
    etrn: str = ""  # the site of an ETRN command
    reply_class: str = r.RECIPIENT  # whose name goes into a generic reject
    resolved: dict[str, ResolveReply] = field(default_factory=dict)  # per-command cache
    where: str = "RCPT"  # the protocol stage, as in log lines and protocol_state
    protocol: str = "SMTP"
    client_port: str = ""
    server_addr: str = ""
    server_port: str = ""
    reverse_name: str = ""  # the reverse lookup alone (no forward confirmation)
    rcpt_count: int = 0
    size: int = 0
    queue_id: str = ""
    long_queue_ids: bool = False
    ill_pipelining: bool = False  # the client sent commands ahead where it may not
    listener: str = "smtp"  # the master.cf service, a metrics label
    in_mail: bool = False  # a MAIL FROM was accepted: a transaction (and its instance) exists
    tls: TlsSession | None = None
    sasl_method: str = ""
    sasl_username: str = ""
    sasl_sender: str = ""
    memory: CheckMemory = field(default_factory=CheckMemory)
    # per evaluation (SMTPD_CHECK_RESET)
    defer_if_permit: str | None = None
    defer_if_reject: str | None = None
    warn_if_reject: int = 0
    recursion: int = 0
    policy_nesting: int = 0  # policy answers being applied (a default action's own query)
    ccert_name: str = ""  # the certificate's CN, the name a ccert reject quotes

    @property
    def namaddr(self) -> str:
        return f"{self.client_name}[{self.client_addr}]"


SASL_USER = "SASL login name"  # SMTPD_NAME_SASL_USER


def what(state: CheckState) -> str:
    """The name a generic reject quotes for the current reply class."""
    kind = state.reply_class
    if kind == r.CLIENT:
        return state.namaddr
    if kind == r.HELO:
        return state.helo
    if kind == r.SENDER:
        return state.sender or ""
    if kind == r.ETRN:
        return state.etrn
    if kind == DATA:
        return "DATA"
    if kind == END_OF_DATA:
        return "END-OF-MESSAGE"
    if kind == "Client certificate":
        return state.ccert_name
    if kind == "Unverified Client host":
        return state.reverse_name or state.client_name
    if kind == SASL_USER:  # non-printable characters shown as "_", as check_sasl_access()
        return "".join(c if c.isprintable() else "_" for c in state.sasl_username)
    return state.recipient


def reject_text(state: CheckState, code: int, dsn: str, text: str) -> str:
    return r.ACCESS_REJECT.format(
        code=code, dsn=dsn, what=what(state), kind=state.reply_class, text=text
    )


def whatsup(state: CheckState, action: str, text: str) -> None:
    """Postfix's log_whatsup(): ``QID: action: WHERE from host[addr]: text; from=...``."""
    parts = [f"{state.queue_id or 'NOQUEUE'}: {action}: {state.where} from {state.namaddr}: "
             f"{text};"]
    if state.sender is not None:
        parts.append(f"from=<{quote_local(state.sender)}>")
    if state.recipient:
        parts.append(f"to=<{quote_local(state.recipient)}>")
    parts.append(f"proto={state.protocol}")
    if state.helo:
        parts.append(f"helo=<{state.helo}>")
    if state.sasl_method:
        parts.append(f"sasl_method={state.sasl_method}")
    if state.sasl_username:
        parts.append(f"sasl_username={state.sasl_username}")
    log.info("%s", " ".join(parts))


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() and ch not in "\r\n" else " " for ch in text)


def finish(state: CheckState, reply: str, *, software: bool = False) -> str | None:
    """A reply a restriction gave, as smtpd_check_reject() makes it; None when
    warn_if_reject made it a warning."""
    code = reply[:3]
    if not (code.isdigit() and 400 <= int(code) <= 599):
        log.warning("SMTP reply code configuration error: %s", reply)
        reply = "450 4.7.1 Service unavailable"
    reply = _printable(reply[:510])
    if state.warn_if_reject and not software:
        whatsup(state, "reject_warning", reply)
        return None
    if state.defer_if_reject is not None and reply[0] == "5":
        deferred, state.defer_if_reject, state.warn_if_reject = state.defer_if_reject, None, 0
        return finish(state, deferred)
    if len(reply) > 5 and reply[4] in "245" and reply[5] == ".":
        reply = reply[:4] + reply[0] + reply[5:]  # the DSN class follows the reply code
    return reply
