"""From a job's next hop to a delivered message (≈ smtp_connect.c).

The next hop is Postfix's (relayhost and transport_maps are already
applied by the qmgr), possibly a list separated by commas or spaces:

* ``[host]:port`` / ``[1.2.3.4]`` — that host, no MX lookup;
* ``host`` / ``host:port`` — MX lookup (SMTP only; LMTP never does MX);
* ``inet:host:port`` and ``unix:/path`` — LMTP's forms.

A session parked for the same next hop is tried first (after an RSET
probe); otherwise each address is tried in turn, up to
``smtp_mx_address_limit`` addresses and ``smtp_mx_session_limit``
sessions that got as far as a greeting, and the last failure is what the
recipients get when none worked. Each next hop has its TLS policy
(:mod:`delivery_smtp.tls_policy`); a TLS handshake that fails at level may
is retried on the same server without TLS, but only for mail that has
waited minimal_backoff_time already, as Postfix does. A DANE level is settled
per MX host (:mod:`delivery_smtp.dane`); where DANE applies it wins over
MTA-STS (RFC 8461 §2), elsewhere MTA-STS applies as for any level.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from dataclasses import dataclass, field, replace

from delivery_smtp import dane
from delivery_smtp.addr import HostLookupError, HostResolver, Target, numeric
from delivery_smtp.mta_sts import MtaSts, StsHop
from delivery_smtp.proto import SiteFailure, TlsStart, handshake, probe, transfer
from delivery_smtp.reuse import SessionCache
from delivery_smtp.sasl_auth import SaslClient, SaslStart
from delivery_smtp.session import Chat
from delivery_smtp.settings import Settings
from delivery_smtp.tls_client import ClientTls
from delivery_smtp.tls_policy import DANE_LEVELS, TlsPolicies, TlsPolicy
from postbus.delivery import Outcome, Stats
from postbus.queue.entry import DeliveryJob


@dataclass(frozen=True)
class NextHop:
    host: str
    port: int
    mx: bool  # look up MX records for host
    path: str = ""  # LMTP over a UNIX-domain socket
    dest: str = field(default="", compare=False)  # as written: the TLS policy lookup key


def _port(text: str) -> int:
    if text.isdigit():
        return int(text)
    return socket.getservbyname(text, "tcp")


def parse_nexthops(nexthop: str, default_port: int, lmtp: bool = False) -> list[NextHop]:
    """Every destination in a next-hop value, in order; ValueError when malformed."""
    hops: list[NextHop] = []
    for item in re.split(r"[\s,]+", nexthop.strip()):
        if not item:
            continue
        if item.startswith("unix:"):
            hops.append(NextHop(item[5:], 0, False, path=item[5:], dest=item[5:]))
            continue
        if item.startswith("inet:"):
            item = item[5:]
        if item.startswith("["):
            host, close, rest = item[1:].partition("]")
            if not close or not host or (rest and not rest.startswith(":")):
                raise ValueError(f"malformed next-hop destination: {item}")
            port = _port(rest[1:]) if rest else default_port
            hops.append(NextHop(host, port, False, dest=item))
            continue
        host, port = item, default_port
        if item.count(":") == 1:
            host, _, text = item.partition(":")
            port = _port(text)
        hops.append(NextHop(host, port, not lmtp and numeric(host) is None, dest=item))
    if not hops:
        raise ValueError("empty next-hop destination")
    return hops


class ConnectFailed(Exception):
    pass


def _strerror(exc: OSError) -> str:
    """The system's words ("Connection refused"), not asyncio's "Connect call failed"."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


async def open_socket(target: Target, timeout: float | None) -> socket.socket:
    """A connected non-blocking TCP socket; ConnectFailed with the system's words."""
    family = socket.AF_INET6 if ":" in target.addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (target.addr, target.port)), timeout
        )
    except TimeoutError as exc:
        sock.close()
        raise ConnectFailed("Connection timed out") from exc
    except OSError as exc:
        sock.close()
        raise ConnectFailed(_strerror(exc)) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Connector:
    """Delivers jobs for one transport: lookups, sessions, the cache."""

    def __init__(
        self,
        settings: Settings,
        resolver: HostResolver,
        cache: SessionCache,
        *,
        caching: bool = True,
        address_limit: int = 5,
        session_limit: int = 2,
        tls: tuple[TlsPolicies, ClientTls] | None = None,
        min_backoff: float = 300.0,
        sts: MtaSts | None = None,
        sasl: SaslClient | None = None,
        dane_mx_policy: str = "dane",
    ) -> None:
        self.st = settings
        self.dane_mx_policy = dane_mx_policy
        self.sts = sts
        self.sasl = sasl
        self.tls = tls
        self.min_backoff = min_backoff
        self.resolver = resolver
        self.cache = cache
        self.caching = caching
        self.address_limit = address_limit
        self.session_limit = session_limit

    async def deliver(
        self, job: DeliveryJob, content: bytes, stats: Stats
    ) -> tuple[list[Outcome], str]:
        """Outcomes per recipient and the relay (``host[addr]:port`` or ``none``)."""
        count = len(job.recipients)
        key = self.sasl.reuse_key(job.nexthop, job.sender) if self.sasl else job.nexthop
        while (chat := self.cache.take(key)) is not None:
            if await probe(chat, self.st):
                stats.conn_setup_done = time.time()
                stats.reuse_count = chat.reuse_count
                return await self._transfer(key, chat, job, content), chat.relay
            self.cache.retire(chat)
        try:
            hops = parse_nexthops(job.nexthop, self.st.default_port, self.st.lmtp)
        except (ValueError, OSError) as exc:
            return [Outcome("deferred", "4.3.5", str(exc))] * count, "none"
        last = Outcome("deferred", "4.4.1", f"no route to {job.nexthop}")
        relay = "none"
        sessions = addresses = 0
        for hop in hops:
            start: TlsStart | None = None
            sts: StsHop | None = None
            daned: TlsPolicy | None = None  # a DANE level, settled per MX host
            if self.tls is not None:
                policies, client = self.tls
                policy = await policies.policy(hop.dest, hop.mx and ":" not in hop.dest)
                if isinstance(policy, TlsPolicy) and policy.level in DANE_LEVELS:
                    daned = policy
                if self.sts is not None and hop.mx and not isinstance(policy, Outcome) \
                        and not policy.site:  # a policy table entry wins over MTA-STS
                    sts, policy = await self.sts.hop(hop.host, policy, policies)
                if isinstance(policy, Outcome):
                    last, relay = policy, "none"
                    continue
                start = TlsStart(policy, client, hop.host, sts.verdict if sts else None)
            sasl = SaslStart(self.sasl, job.sender, hop.dest) if self.sasl else None
            try:
                targets = await self._targets(hop)
            except HostLookupError as exc:
                last, relay = exc.outcome, "none"
                continue
            if sts is not None and daned is None:
                allowed = sts.allowed(targets)
                if isinstance(allowed, Outcome):
                    last, relay = allowed, "none"
                    continue
                targets = allowed
            for target in targets:
                if addresses >= self.address_limit or sessions >= self.session_limit:
                    break
                addresses += 1
                tstart, tsts = start, sts
                if daned is not None and start is not None:
                    got = await self._dane(daned, start, sts, target, hop)
                    if isinstance(got, Outcome):
                        last, relay = got, "none"
                        continue
                    tstart, tsts = got
                try:
                    chat = await self._open(target)
                except ConnectFailed as exc:
                    text = f"connect to {target.namaddrport}: {exc}"
                    last, relay = Outcome("deferred", "4.4.1", text), "none"
                    continue
                sessions += 1
                try:
                    await handshake(chat, self.st, tstart, sasl)
                except SiteFailure as exc:
                    chat.broken = True
                    self.cache.retire(chat)
                    last, relay = exc.outcome, exc.relay
                    if not exc.plaintext_ok or not self._plaintext_ok(job):
                        continue
                    retried = await self._plaintext(target, sasl)
                    if isinstance(retried, tuple):
                        last, relay = retried
                        continue
                    chat = retried
                finally:
                    if tsts is not None:  # the TLS-RPT result of this session
                        await tsts.done(target)
                stats.conn_setup_done = time.time()
                return await self._transfer(key, chat, job, content), chat.relay
        stats.site_failure = last  # no server took a session: the destination failed
        return [last] * count, relay

    async def _dane(self, daned: TlsPolicy, start: TlsStart, sts: StsHop | None,
                    target: Target, hop: NextHop) -> tuple[TlsStart, StsHop | None] | Outcome:
        """The TLS start for ``target`` under a DANE level: DANE where the MX host has
        usable TLSA records, else MTA-STS when the domain has a policy, else the level
        DANE fell back to; or why this MX host is skipped."""
        assert self.tls is not None
        policies, client = self.tls
        settled = await dane.settle(daned, target, hop.dest, self.resolver, policies,
                                    self.dane_mx_policy)
        if isinstance(settled, Outcome):
            return settled
        if settled.tlsa or sts is None:
            return TlsStart(settled, client, hop.host, None), None
        allowed = sts.allowed([target])
        if isinstance(allowed, Outcome):
            return allowed
        sts_policy = start.policy
        if sts_policy.level in DANE_LEVELS:  # testing mode kept the DANE level
            sts_policy = replace(settled, sts=sts_policy.sts)
        return TlsStart(sts_policy, client, hop.host, sts.verdict), sts

    async def _plaintext(
        self, target: Target, sasl: SaslStart | None
    ) -> Chat | tuple[Outcome, str]:
        """The same server again, without TLS (≈ RETRY_AS_PLAINTEXT); or why not."""
        try:
            chat = await self._open(target)
        except ConnectFailed as exc:
            return Outcome("deferred", "4.4.1", f"connect to {target.namaddrport}: {exc}"), "none"
        try:
            await handshake(chat, self.st, None, sasl)
        except SiteFailure as exc:
            chat.broken = True
            self.cache.retire(chat)
            return exc.outcome, exc.relay
        return chat

    def _plaintext_ok(self, job: DeliveryJob) -> bool:
        """Postfix retries a may-level server in clear text only for mail that has
        waited at least minimal_backoff_time (a first attempt defers instead)."""
        arrival = job.arrival_time
        active = job.active_time or time.time()
        return active - arrival >= self.min_backoff

    async def _transfer(
        self, key: str, chat: Chat, job: DeliveryJob, content: bytes
    ) -> list[Outcome]:
        last = not (self.caching and self.cache.reusable(chat))  # decided before the "."
        try:
            return await transfer(chat, self.st, job, content, last=last)
        finally:
            self.cache.release(key, chat, self.caching)

    async def _targets(self, hop: NextHop) -> list[Target]:
        if hop.path:
            return [Target(self.st.myhostname, hop.path, 0)]  # ≈ smtp_connect_local()
        if hop.mx:
            return await self.resolver.mx_targets(hop.host, hop.port)
        return await self.resolver.host_targets(hop.host, hop.port)

    async def _open(self, target: Target) -> Chat:
        if target.port == 0:  # LMTP over a UNIX-domain socket
            try:
                async with asyncio.timeout(self.st.connect_timeout):
                    return await Chat.over_unix(target, target.addr)
            except TimeoutError as exc:
                raise ConnectFailed("Connection timed out") from exc
            except OSError as exc:
                raise ConnectFailed(_strerror(exc)) from exc
        sock = await open_socket(target, self.st.connect_timeout)
        try:
            return await Chat.over_socket(target, sock)
        except OSError as exc:
            sock.close()
            raise ConnectFailed(_strerror(exc)) from exc
