"""Client connection and rate limits (≈ smtpd.c's anvil_clnt_* calls), held across replicas.

The counters are :class:`postbus.anvil.Anvil`'s, in Redis. Which event is
checked where, and what the client is told, is Postfix's:

- at connect, after wrapper-mode TLS and before the greeting:
  smtpd_client_connection_count_limit (open connections) and
  smtpd_client_connection_rate_limit, ``421 4.7.0 <host> Error: too many
  connections from <addr>``;
- MAIL: smtpd_client_message_rate_limit, ``450 4.7.1 Error: too much mail
  from <addr>``; RCPT and VRFY: smtpd_client_recipient_rate_limit,
  ``450 4.7.1 Error: too many recipients from <addr>``; AUTH:
  smtpd_client_auth_rate_limit, ``450 4.7.1 Error: too many AUTH commands
  from <addr>`` (:meth:`ClientLimits.auth` is the hook the AUTH command calls);
- STARTTLS: smtpd_client_new_tls_session_rate_limit refuses the command
  (``454 4.7.0``) once the period's new sessions are over the limit, counts
  each new session after its handshake, and ends the session that went over
  (``421 4.7.0 <host> Error: too many new TLS sessions from <name[addr]>``).

A limit of 0 is no limit; each event counts itself, so a limit of N lets N
events through per anvil_rate_time_unit. Clients in
smtpd_client_event_limit_exceptions (default: $mynetworks) are neither
counted nor limited. Every connection is counted while any limit is set, as
Postfix sends anvil its connect and disconnect events. Redis unreachable:
no limit applies (logged once by :mod:`postbus.anvil`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from postbus.anvil import Anvil
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.match_lists import Network, parse_ip, parse_network

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

log = logging.getLogger("postbus.smtpd")

TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Error: too many connections from {addr}"
TOO_MUCH_MAIL = "450 4.7.1 Error: too much mail from {addr}"
TOO_MANY_RECIPIENTS = "450 4.7.1 Error: too many recipients from {addr}"
TOO_MANY_AUTH = "450 4.7.1 Error: too many AUTH commands from {addr}"
TOO_MANY_TLS = "454 4.7.0 Error: too many new TLS sessions from {namaddr}"
TOO_MANY_TLS_AFTER = "421 4.7.0 {host} Error: too many new TLS sessions from {namaddr}"


class ClientList:
    """A host name/address list such as smtpd_client_event_limit_exceptions (≈ namadr_list):
    addresses and networks match the address, tables the name and then the address,
    names the name (``.domain`` its subdomains); ``!`` excludes; the first match decides."""

    def __init__(self, cfg: Config, param: str) -> None:
        self.entries: list[tuple[bool, Network | Maps | str]] = []
        for word in cfg.list(param):
            negate = word.startswith("!")
            word = word.lstrip("!")
            net = parse_network(word)
            if net is not None:
                self.entries.append((negate, net))
            elif ":" in word and not word.startswith("["):
                self.entries.append((negate, open_maps(word, param)))
            else:
                self.entries.append((negate, word.lower()))

    async def matches(self, name: str, addr: str) -> bool:
        ip = parse_ip(addr)
        name = name.lower()
        for negate, entry in self.entries:
            if isinstance(entry, Maps):
                hit = (name != "unknown" and await entry.find(name) is not None) \
                    or await entry.find(addr) is not None
            elif isinstance(entry, str):
                hit = name == entry or (entry.startswith(".") and name.endswith(entry))
            else:
                hit = ip is not None and ip.version == entry.version and ip in entry
            if hit:
                return not negate
        return False


class ClientLimits:
    """The limits of one smtpd listener; :meth:`for_session` gives a session its own."""

    def __init__(self, cfg: Config, anvil: Anvil | None) -> None:
        self.count = cfg.int("smtpd_client_connection_count_limit")
        self.rate = cfg.int("smtpd_client_connection_rate_limit")
        self.mail = cfg.int("smtpd_client_message_rate_limit")
        self.rcpt = cfg.int("smtpd_client_recipient_rate_limit")
        self.newtls = cfg.int("smtpd_client_new_tls_session_rate_limit")
        self.auth = cfg.int("smtpd_client_auth_rate_limit")
        self.exceptions = ClientList(cfg, "smtpd_client_event_limit_exceptions")
        limited = any((self.count, self.rate, self.mail, self.rcpt, self.newtls, self.auth))
        self.anvil = anvil if limited else None  # no limit: no anvil, as Postfix

    def for_session(self, session: Session) -> SessionLimits:
        return SessionLimits(self, session)


class SessionLimits:
    """One session's view of the limits: counts its events and answers when one is over."""

    def __init__(self, limits: ClientLimits, session: Session) -> None:
        self.limits = limits
        self.session = session
        self.anvil = limits.anvil
        self.ticket: str | None = None
        self.exempt: bool | None = None  # smtpd_client_event_limit_exceptions, once asked

    async def _counted(self, limit: int | None = None) -> Anvil | None:
        """The anvil when this client is counted (and ``limit``, when given, is set)."""
        if self.anvil is None or (limit is not None and limit <= 0):
            return None
        if self.exempt is None:
            s = self.session
            self.exempt = await self.limits.exceptions.matches(s.client_name, s.client_addr)
        return None if self.exempt else self.anvil

    def _warn(self, what: str, count: int) -> None:
        s = self.session
        log.warning("%s limit exceeded: %d from %s for service %s", what, count, s.namaddr,
                    s.server.listener)

    async def connect(self) -> bool:
        """The connection is counted; False (after the 421) when it is one too many."""
        s = self.session
        anvil = await self._counted()
        if anvil is None:
            return True
        got = await anvil.connect(s.client_addr)
        if got is None:
            return True
        self.ticket, count, rate = got
        reply = TOO_MANY_CONNECTIONS.format(host=s.s.myhostname, addr=s.client_addr)
        if self.limits.count > 0 and count > self.limits.count:
            self._warn("Connection concurrency", count)
            s.conn.write(reply)
            return False
        if self.limits.rate > 0 and rate > self.limits.rate:
            self._warn("Connection rate", rate)
            s.conn.write(reply)
            return False
        return True

    async def disconnect(self) -> None:
        if self.anvil is not None and self.ticket is not None:
            await self.anvil.disconnect(self.ticket)
            self.ticket = None

    async def mail(self) -> bool:
        """MAIL may go on; False after ``450 4.7.1 Error: too much mail``."""
        anvil = await self._counted(self.limits.mail)
        if anvil is None:
            return True
        rate = await anvil.mail(self.session.client_addr)
        if rate is None or rate <= self.limits.mail:
            return True
        await self.session.reply(TOO_MUCH_MAIL.format(addr=self.session.client_addr))
        self._warn("Message delivery request rate", rate)
        return False

    async def rcpt(self) -> bool:
        """RCPT or VRFY may go on; False after ``450 4.7.1 Error: too many recipients``."""
        anvil = await self._counted(self.limits.rcpt)
        if anvil is None:
            return True
        rate = await anvil.rcpt(self.session.client_addr)
        if rate is None or rate <= self.limits.rcpt:
            return True
        self._warn("Recipient address rate", rate)
        await self.session.reply(TOO_MANY_RECIPIENTS.format(addr=self.session.client_addr))
        return False

    async def auth(self) -> bool:
        """The hook for the AUTH command, called before it runs: False (after
        ``450 4.7.1 Error: too many AUTH commands``) when the client is over
        smtpd_client_auth_rate_limit; the command then counts as failed."""
        anvil = await self._counted(self.limits.auth)
        if anvil is None:
            return True
        rate = await anvil.auth(self.session.client_addr)
        if rate is None or rate <= self.limits.auth:
            return True
        self._warn("AUTH command rate", rate)
        await self.session.reply(TOO_MANY_AUTH.format(addr=self.session.client_addr))
        return False

    async def starttls(self) -> bool:
        """STARTTLS may start a handshake; False after ``454 4.7.0`` when this period's
        new TLS sessions are already over the limit."""
        anvil = await self._counted(self.limits.newtls)
        if anvil is None:
            return True
        rate = await anvil.newtls_stat(self.session.client_addr)
        if rate is None or rate <= self.limits.newtls:
            return True
        s = self.session
        log.warning("Refusing STARTTLS request from %s for service %s", s.namaddr,
                    s.server.listener)
        await s.reply(TOO_MANY_TLS.format(namaddr=s.namaddr))
        return False

    async def wrapper(self) -> bool:
        """Wrapper mode: False (no reply, as Postfix) when the client is over the limit."""
        anvil = await self._counted(self.limits.newtls)
        if anvil is None:
            return True
        rate = await anvil.newtls_stat(self.session.client_addr)
        if rate is None or rate <= self.limits.newtls:
            return True
        s = self.session
        log.warning("Refusing TLS service request from %s for service %s", s.namaddr,
                    s.server.listener)
        return False

    async def new_tls_session(self, reused: bool) -> bool:
        """After a handshake: a new (not resumed) session counts; False (after the 421)
        when it is one too many and the session must end."""
        anvil = await self._counted(self.limits.newtls)
        if anvil is None or reused:
            return True
        rate = await anvil.newtls(self.session.client_addr)
        if rate is None or rate <= self.limits.newtls:
            return True
        s = self.session
        self._warn("New TLS session rate", rate)
        s.conn.write(TOO_MANY_TLS_AFTER.format(host=s.s.myhostname, namaddr=s.namaddr))
        return False
