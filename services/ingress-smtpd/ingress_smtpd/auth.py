"""SMTP AUTH in smtpd (≈ smtpd_sasl_proto.c and smtpd_sasl_glue.c).

AUTH is active for a session when smtpd_sasl_auth_enable is on and, with
smtpd_tls_auth_only (implied by smtpd_tls_security_level = encrypt), only
once TLS is on; STARTTLS forgets an earlier login and takes the mechanisms
anew under smtpd_sasl_tls_security_options.  An inactive AUTH is ``503
5.5.1 Error: authentication not enabled``, as Postfix answers.  The
mechanisms come from the backend (:mod:`postbus.sasl`), filtered by the
security options, then by smtpd_sasl_mechanism_filter (which only hides a
mechanism from EHLO: AUTH takes it, as Postfix does); EHLO offers
``AUTH mechs`` (and ``AUTH=mechs`` with broken_sasl_auth_clients), except
to smtpd_sasl_exceptions_networks.  Every response line is bounded by
smtpd_sasl_response_limit; ``*`` cancels; every failure is logged with the
client, the mechanism, the reason and the user name, as Postfix does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingress_smtpd import milter
from postbus import metrics
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.match_lists import NetworkList, parse_network
from postbus.sasl import (
    Backend,
    Status,
    Step,
    filter_mechanisms,
    open_backend,
    security_options,
)
from postbus.sasl.mech_filter import MechanismFilter
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")

RESPONSE_LIMIT_MIN = 12288  # DEF_SMTPD_SASL_RESP_LIMIT, also the minimum


@dataclass
class AuthSettings:
    """The SASL parameters of smtpd, read once at start."""

    enable: bool
    tls_only: bool
    options: frozenset[str]
    tls_options: frozenset[str]
    broken_clients: bool
    header: bool
    service: str
    response_limit: int
    backend: Backend | None
    exceptions: NetworkList | None  # smtpd_sasl_exceptions_networks: not offered AUTH
    mech_filter: MechanismFilter | None = None  # smtpd_sasl_mechanism_filter

    @classmethod
    def from_config(cls, cfg: Config) -> AuthSettings:
        enable = cfg.bool("smtpd_sasl_auth_enable")
        level = cfg.get("smtpd_tls_security_level").strip().lower()
        return cls(
            enable=enable,
            tls_only=cfg.bool("smtpd_tls_auth_only") or level == "encrypt"
            or (not level and cfg.bool("smtpd_enforce_tls")),
            options=security_options(cfg, "smtpd_sasl_security_options"),
            tls_options=security_options(cfg, "smtpd_sasl_tls_security_options"),
            broken_clients=cfg.bool("broken_sasl_auth_clients"),
            header=cfg.bool("smtpd_sasl_authenticated_header"),
            service=cfg.get("smtpd_sasl_service"),
            response_limit=_response_limit(cfg),
            backend=open_backend(cfg) if enable else None,
            exceptions=_exceptions(cfg),
            mech_filter=MechanismFilter.from_config(cfg) if enable else None,
        )


def _response_limit(cfg: Config) -> int:
    """smtpd_sasl_response_limit, at least its default (Postfix's minimum too)."""
    value = cfg.int("smtpd_sasl_response_limit")
    if value < RESPONSE_LIMIT_MIN:
        raise ConfigError(f"invalid smtpd_sasl_response_limit parameter value {value} < "
                          f"{RESPONSE_LIMIT_MIN}", parameter="smtpd_sasl_response_limit")
    return value


def _exceptions(cfg: Config) -> NetworkList | None:
    """smtpd_sasl_exceptions_networks: addresses, networks and tables of addresses; host
    names (which Postfix matches too) are refused rather than ignored."""
    param = "smtpd_sasl_exceptions_networks"
    for word in cfg.list(param):
        word = word.lstrip("!")
        if parse_network(word) is None and (":" not in word or word.startswith("[")):
            raise ConfigError(f"host name {word} is not supported yet by Postbus "
                              "(addresses, networks and tables are)", parameter=param)
    return NetworkList(cfg, param) if cfg.list(param) else None


@dataclass
class AuthState:
    """What one session knows of SMTP AUTH; STARTTLS starts a new one."""

    mechanisms: list[str] | None = None  # offered; None: not yet asked of the backend
    usable: list[str] = field(default_factory=list)  # AUTH takes these (before the filter)
    username: str | None = None
    method: str | None = None


async def mechanisms(session: Session) -> list[str]:
    """The mechanisms this session may use (empty: AUTH is not active)."""
    a = session.s.auth
    state = session.auth
    if not a.enable or a.backend is None or (a.tls_only and session.tls is None):
        return []
    if state.mechanisms is None:
        offered = await a.backend.mechanisms()
        if offered is None:
            state.mechanisms = []  # warned by the backend; Postfix would stop here
        else:
            options = a.tls_options if session.tls is not None else a.options
            names = state.usable = filter_mechanisms(offered, options)
            if not names:
                log.warning("no SASL authentication mechanisms")
            elif a.mech_filter is not None:  # then smtpd_sasl_mechanism_filter
                names = await a.mech_filter.apply(names) or []
            state.mechanisms = names
    return state.mechanisms


async def ehlo_keywords(session: Session) -> tuple[str, ...]:
    """``AUTH PLAIN LOGIN`` (and ``AUTH=PLAIN LOGIN`` for broken clients), or nothing."""
    if "AUTH" in session.discard:
        return ()
    exceptions = session.s.auth.exceptions
    if exceptions is not None and await exceptions.matches(session.client_addr):
        return ()  # not announced; the AUTH command still works, as in Postfix
    mechs = await mechanisms(session)
    if not mechs:
        return ()
    words = " ".join(mechs)
    return (f"AUTH {words}", f"AUTH={words}") if session.s.auth.broken_clients \
        else (f"AUTH {words}",)


async def do_auth(session: Session, arg: str) -> bool:
    if not await session.limits.auth():  # smtpd_client_auth_rate_limit, before all else
        return False
    s = session.s
    if s.helo_required and not session.helo:
        await session.reply(r.NEED_HELO)
        return False
    if "AUTH" in session.discard or not await mechanisms(session):
        await session.reply(r.AUTH_NOT_ENABLED)
        return False
    if session.sender is not None:
        await session.reply(r.AUTH_IN_TRANSACTION)
        return False
    if await milter.other(session, tls=True):
        return False
    if s.auth.tls_only and session.tls is None:
        await session.reply(r.AUTH_NEED_TLS)  # RFC 4954 section 4 (not reached: inactive)
        return False
    if session.auth.username is not None:
        await session.reply(r.AUTH_ALREADY)
        return False
    words = arg.split()
    if not 1 <= len(words) <= 2:
        await session.reply(r.AUTH_SYNTAX)
        return False
    method = words[0]
    assert s.auth.backend is not None
    if method.upper() not in (m.upper() for m in session.auth.usable):
        # not the backend's under the security options (smtpd_sasl_mechanism_filter only
        # hides a mechanism from EHLO: Postfix hands AUTH to the backend all the same)
        step = Step(Status.FAIL, "Invalid authentication mechanism")
        return await _failed(session, method, step)
    exchange = s.auth.backend.exchange(
        service=s.auth.service, client_addr=session.client_addr,
        server_addr=session.conn.local_addr(), secured=session.tls is not None)
    try:
        step = await exchange.first(method, words[1] if len(words) == 2 else None)
        while step.status is Status.MORE:
            session.conn.write(f"334 {step.text}")
            await session.conn.flush()
            response = await _response(session)
            if response is None:
                return False
            if response == "*":
                log.warning("%s: SASL %s authentication aborted", session.namaddr, method)
                _count(session, "aborted")
                await session.reply(r.AUTH_ABORTED)
                return False
            step = await exchange.next(response)
    finally:
        await exchange.close()
    if step.status is not Status.DONE:
        return await _failed(session, method, step)
    session.conn.write(r.AUTH_OK)
    _count(session, "success")
    session.auth.username = _printable(step.username or "")
    session.auth.method = _printable(method)
    if session.header_context != "local" and await session.server.local_client(
            session.client_addr, authenticated=True):  # local_header_rewrite_clients
        session.header_context = session.server.cleanup.header_context(True)
        session.add_missing = True
    return True


async def _failed(session: Session, method: str, step: Step) -> bool:
    """535 (454 for a temporary failure), logged as Postfix logs it; always False."""
    reason = step.text or "(reason unavailable)"
    log.warning("%s: SASL %.100s authentication failed: %s, sasl_username=%.100s",
                session.namaddr, method, reason, step.username or "(unavailable)")
    _count(session, "temporary" if step.status is Status.TEMP else "failure")
    template = r.AUTH_TEMP_FAILED if step.status is Status.TEMP else r.AUTH_FAILED
    await session.reply(template.format(reason=reason))
    return False


async def _response(session: Session) -> str | None:
    """One client response line (None: answered already).

    As smtpd_chat_query_limit(): at most smtpd_sasl_response_limit bytes with
    the line end, so the text itself is shorter; a longer line is logged,
    skipped to its end and answered ``500 5.5.6``."""
    limit = session.s.auth.response_limit
    line = await session.conn.readline(limit + 1)  # the +1: a CR at the bound, then LF
    if line is None:
        raise ConnectionResetError("client went away")
    end = 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0
    if not end or len(line) - end >= limit:
        text = line[:limit].decode("utf-8", "replace").rstrip("\r\n")
        log.warning("%s: request longer than %d: %.30s...", session.namaddr, limit,
                    _printable(text))
        if not end:
            await session.conn.skip_line(limit)
        await session.reply(r.AUTH_RESPONSE_LIMIT)
        return None
    return line.decode("utf-8", "surrogateescape").rstrip("\r\n")


def log_fields(session: Session) -> str:
    """``, sasl_method=PLAIN, sasl_username=u, sasl_sender=s`` for the client= line."""
    out = ""
    if session.auth.method:
        out += f", sasl_method={session.auth.method}"
    if session.auth.username is not None:
        out += f", sasl_username={session.auth.username}"
    if session.mail is not None and session.mail.auth is not None:
        out += f", sasl_sender={session.mail.auth}"
    return out


def _count(session: Session, result: str) -> None:
    metrics.smtpd_auth.labels(session.server.listener, result).inc()


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
