"""The SMTP listener of the ingress role (≈ Postfix master's inet listener + smtpd's main).

:func:`main` is what ``python -m ingress_smtpd`` runs under the service
skeleton: it listens on the address of this service's master.cf line and
writes every accepted message through ``ctx.queue``.  :class:`SmtpServer`
can also run without the bus, with any :data:`QueueWriter` (tests that
compare replies with Postfix).

Client host names: Postfix looks up the PTR name of each client
(``smtpd_peername_lookup = yes``).  We do it only when postbus_dns_servers
is set too, with dnspython's async resolver and a forward-confirming
lookup; otherwise every client is ``unknown``, as Postfix logs a client
without a verified name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ingress_smtpd.auth import AuthSettings
from ingress_smtpd.connection import Connection
from ingress_smtpd.etrn import FlushRequest, flush_over_bus
from ingress_smtpd.limits import ClientLimits
from ingress_smtpd.protocol import run
from ingress_smtpd.proxy import HeaderOnly, families, proxy_protocol, read_endpoints
from ingress_smtpd.proxy_filter import ProxySettings
from ingress_smtpd.restrictions import Policy
from ingress_smtpd.session import QueueWriter, Session
from ingress_smtpd.xforward import authorized_hosts
from postbus import metrics
from postbus.anvil import Anvil
from postbus.cleanup import Cleanup
from postbus.cleanup.api import receive_overrides
from postbus.config.conv import ConfigError, split_list
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.master_plan import process_count
from postbus.match_lists import DomainList, parse_ip
from postbus.milter import MilterSettings
from postbus.params import PARAMS
from postbus.queue.entry import QueueEntry
from postbus.service import ServiceContext
from postbus.smtp import replies as r
from postbus.tls import ServerTls, ServerTlsSettings

log = logging.getLogger("postbus.smtpd")

#: The default's pattern table (non-letter commands): the one table let through.
_DEFAULT_FORBIDDEN = frozenset(split_list(PARAMS["smtpd_forbidden_commands"].default))
QUEUE_WRITE_TIMEOUT = 10.0  # seconds for JetStream to acknowledge a new message
DRAIN_SECONDS = 5.0  # how long open sessions may go on after SIGTERM


@dataclass
class Settings:
    """The smtpd parameters, read once at start."""

    myhostname: str
    mail_name: str
    banner: str
    size_limit: int
    line_limit: int
    header_size_limit: int
    timeout: float
    recipient_limit: int
    soft_error_limit: int
    hard_error_limit: int
    error_sleep: float
    junk_limit: int
    helo_required: bool
    disable_vrfy: bool
    strict_envelopes: bool
    always_add_headers: bool
    peername_lookup: bool
    dns_servers: list[str]
    forbidden: frozenset[str]
    discard: frozenset[str]  # smtpd_discard_ehlo_keywords, upper case
    discard_maps: Maps | None  # smtpd_discard_ehlo_keyword_address_maps
    long_queue_ids: bool
    smtputf8: bool
    tls: ServerTlsSettings
    fast_flush: DomainList
    proxy: str  # smtpd_upstream_proxy_protocol: "" or "haproxy"
    proxy_timeout: float
    families: tuple[bool, bool]  # IPv4, IPv6 enabled (inet_protocols)
    auth: AuthSettings
    queue_timeout: float = QUEUE_WRITE_TIMEOUT

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        forbidden = cfg.list("smtpd_forbidden_commands")
        for word in forbidden:  # command names only: no pattern tables yet
            if not word.isalpha() and word not in _DEFAULT_FORBIDDEN:
                raise ConfigError(f"{word} is not supported yet by Postbus",
                                  parameter="smtpd_forbidden_commands")
        discard_maps = cfg.get("smtpd_discard_ehlo_keyword_address_maps")
        disable_vrfy = cfg.bool("disable_vrfy_command")
        size_limit = cfg.size("message_size_limit")
        myhostname = cfg.get("myhostname")
        return cls(
            myhostname=myhostname,
            mail_name=cfg.get("mail_name"),
            banner=cfg.get("smtpd_banner"),
            size_limit=size_limit,
            line_limit=max(cfg.size("line_length_limit"), 512),
            header_size_limit=cfg.size("header_size_limit"),
            timeout=cfg.time("smtpd_timeout"),
            recipient_limit=cfg.int("smtpd_recipient_limit"),
            soft_error_limit=cfg.int("smtpd_soft_error_limit"),
            hard_error_limit=cfg.int("smtpd_hard_error_limit"),
            error_sleep=cfg.time("smtpd_error_sleep_time"),
            junk_limit=cfg.int("smtpd_junk_command_limit"),
            helo_required=cfg.bool("smtpd_helo_required"),
            disable_vrfy=disable_vrfy,
            strict_envelopes=cfg.bool("strict_rfc821_envelopes"),
            always_add_headers=cfg.bool("always_add_missing_headers"),
            peername_lookup=cfg.bool("smtpd_peername_lookup"),
            dns_servers=cfg.list("postbus_dns_servers"),
            forbidden=frozenset(w.upper() for w in forbidden if w.isalpha()),
            discard=r.discard_mask(cfg.get("smtpd_discard_ehlo_keywords")),
            discard_maps=open_maps(discard_maps, "smtpd_discard_ehlo_keyword_address_maps")
            if discard_maps.strip() else None,
            long_queue_ids=cfg.bool("enable_long_queue_ids"),
            smtputf8=cfg.bool("smtputf8_enable"),
            tls=ServerTlsSettings.from_config(cfg),
            fast_flush=DomainList.from_config(
                cfg, "fast_flush_domains", set(cfg.list("parent_domain_matches_subdomains"))),
            proxy=proxy_protocol(cfg),
            proxy_timeout=cfg.time("smtpd_upstream_proxy_timeout"),
            families=families(cfg),
            auth=AuthSettings.from_config(cfg),
        )


class SmtpServer:
    """Listens, runs one :class:`Session` per connection, drains on stop."""

    def __init__(
        self, cfg: Config, writer: QueueWriter, listener: str = "smtp",
        flush: FlushRequest | None = None, anvil: Anvil | None = None,
    ) -> None:
        self.tls: ServerTls | None = None
        self.anvil = anvil  # the client limits' counters (None: no limits, as stand-alone)
        self._closing: set[asyncio.Task[None]] = set()
        self.reconfigure(cfg)
        self.writer = writer
        self.flush = flush  # ETRN: ask the qmgr to flush a site (None: no flush service)
        self.listener = listener
        self.accepted = metrics.smtpd_messages_accepted.labels(listener)
        self.sizes = metrics.smtpd_message_size.labels(listener)
        self.connections = metrics.smtpd_connections.labels(listener)
        self.active = metrics.smtpd_active_connections.labels(listener)
        self.sessions: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.AbstractServer] = []

    def reconfigure(self, cfg: Config) -> None:
        """Apply a (re)loaded configuration to new sessions; sessions already
        running finish with the settings they started with. Raises
        ConfigError, leaving the old settings in place, when it is unusable."""
        settings, policy = Settings.from_config(cfg), Policy(cfg)
        cleanup = Cleanup(cfg, policy.resolver)
        proxy_filter = ProxySettings.from_config(cfg)  # smtpd_proxy_filter
        xforward_hosts = authorized_hosts(cfg)  # smtpd_authorized_xforward_hosts
        milters = MilterSettings.from_config(cfg, "smtpd_milters")
        if "no_milters" in receive_overrides(cfg):
            milters.milters = []
        self._keep_sasl_backend(settings)
        if self.tls is None or self.tls.settings != settings.tls:
            self.tls = ServerTls(settings.tls)
        self.cfg, self.settings, self.policy, self.cleanup = cfg, settings, policy, cleanup
        self.proxy_filter, self.xforward_hosts = proxy_filter, xforward_hosts
        self.milters = milters
        if self.anvil is not None:
            self.anvil.unit_ms = int(cfg.time("anvil_rate_time_unit") * 1000)
        self.limits = ClientLimits(cfg, self.anvil)
        self._rewrite = cfg.list("local_header_rewrite_clients")
        self._interfaces = cfg.list("inet_interfaces")

    def _keep_sasl_backend(self, settings: Settings) -> None:
        """A reload keeps the SASL backend (and its Dovecot connection) when it is the
        same; a replaced one is closed."""
        old = self.settings.auth.backend if hasattr(self, "settings") else None
        if old is None:
            return
        if settings.auth.backend == old:
            settings.auth.backend = old
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing was opened
            task = asyncio.get_running_loop().create_task(old.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False
    ) -> list[tuple[str, int]]:
        """Listen on host:port (host "": inet_interfaces); returns the bound addresses.

        ``reuse_port``: other processes of this master.cf line (maxproc > 1)
        bind the same port, and the kernel spreads new connections over them
        (SO_REUSEPORT)."""
        loop = asyncio.get_running_loop()
        addresses: list[tuple[str, int]] = []
        for h in self._hosts(host):
            server = await loop.create_server(
                lambda: Connection(self._accept, self.settings.timeout),
                h, port, reuse_address=True, reuse_port=reuse_port or None, backlog=1024,
            )
            self.servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                addresses.append((str(name[0]), int(name[1])))
        return addresses

    def _hosts(self, host: str) -> list[str | None]:
        if host:
            return [host]
        words = self.cfg.list("inet_interfaces")
        if "all" in words:
            return [None]
        hosts: list[str | None] = []
        for word in words:
            if word in ("loopback-only", "localhost"):
                hosts.append("127.0.0.1")
            else:
                hosts.append(word.strip("[]"))
        return hosts or [None]

    def _accept(self, conn: Connection) -> None:
        if self.settings.proxy and self.settings.tls.wrappermode:
            HeaderOnly.install(conn)  # read no further than the header: TLS follows
        task = asyncio.create_task(self._session(conn))
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    async def _session(self, conn: Connection) -> None:
        self.connections.inc()
        active = self.active
        active.inc()
        addr = conn.peer[0]
        try:
            hangup = False
            if self.settings.proxy:  # the client is the one the proxy names
                endpoints = await read_endpoints(conn, self.settings.proxy_timeout,
                                                 *self.settings.families)
                hangup = endpoints is None
                conn.peer = endpoints or conn.peer
            addr = conn.peer[0]
            if addr.startswith("::ffff:") and "." in addr:
                addr = addr[7:]
            name = await self._peername(addr)
            session = Session(self, conn, name, addr, hangup=hangup)
            try:
                await run(session)
            finally:
                session.release()
        except Exception:
            log.error("session with %s[%s] failed", "unknown", addr, exc_info=True)
            conn.close()
        finally:
            active.dec()

    async def _peername(self, addr: str) -> str:
        if not (self.settings.peername_lookup and self.settings.dns_servers):
            return "unknown"
        import dns.exception
        import dns.reversename

        resolver = self.policy.dns  # postbus_dns_servers, ``host`` or ``host:port``
        try:
            answer = await resolver.resolve(dns.reversename.from_address(addr), "PTR")
            name = str(answer[0]).rstrip(".")
            kind = "AAAA" if ":" in addr else "A"
            forward = await resolver.resolve(name, kind)
            if any(ipaddress.ip_address(str(a)) == ipaddress.ip_address(addr) for a in forward):
                return name
        except (dns.exception.DNSException, ValueError, OSError):
            pass
        return "unknown"

    async def local_client(self, addr: str, authenticated: bool = False) -> bool:
        """The client is in local_header_rewrite_clients: its headers are rewritten
        in the local context (≈ smtpd_check_rewrite()); ``authenticated``: after AUTH."""
        for word in self._rewrite:
            if word == "permit_mynetworks" and await self.policy.in_mynetworks(addr):
                return True
            if word == "permit_sasl_authenticated" and authenticated:
                return True
            if word == "permit_inet_interfaces" and self._local_address(addr):
                return True
            if word == "static:all":
                return True
        return False

    def _local_address(self, addr: str) -> bool:
        ip = parse_ip(addr)
        if ip is None:
            return False
        words = self._interfaces
        if ip.is_loopback and ("all" in words or "loopback-only" in words):
            return True
        return addr in words or f"[{addr}]" in words

    async def stop(self, grace: float = DRAIN_SECONDS) -> None:
        """Stop accepting; let sessions finish for ``grace`` seconds, then cut them."""
        for server in self.servers:
            server.close()
        if self.sessions:
            _, pending = await asyncio.wait(set(self.sessions), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        await self.policy.close()  # the policy servers' kept connections
        if self.settings.auth.backend is not None:
            await self.settings.auth.backend.aclose()


async def main(ctx: ServiceContext) -> None:
    cfg = ctx.cfg
    master = ctx.master_entry()
    where = master.listen_address() if master is not None else None
    if master is None or where is None:
        raise ConfigError(f"service {ctx.service} is not an inet service")
    long_ids = cfg.bool("enable_long_queue_ids")
    store = ctx.queue

    async def write(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        return await store.enqueue(entry, b"", long_ids, build=build, queue_id=entry.queue_id)

    flush = flush_over_bus(ctx.nc) if ctx.nc is not None else None
    anvil = Anvil(ctx.service, cfg.time("anvil_rate_time_unit"))
    server = SmtpServer(cfg, write, listener=ctx.service, flush=flush, anvil=anvil)
    ctx.on_reload(server.reconfigure)
    host, port = where
    bound = await server.start(host, port, reuse_port=process_count(master) > 1)
    log.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in bound))
    ctx.ready = True
    await ctx.stopping.wait()
    ctx.ready = False
    await server.stop()

