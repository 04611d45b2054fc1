"""The smtp/lmtp agent put together (≈ smtp.c: deliver_message()).

:func:`build` reads the configuration of one master.cf service into a
:class:`~delivery_smtp.connect.Connector`; :func:`agent` wraps it into the
per-job function the shared job loop calls, logging each recipient's
outcome in Postfix's format.
"""

from __future__ import annotations

import logging
import time

from delivery_smtp.addr import HostResolver, families
from delivery_smtp.connect import Connector
from delivery_smtp.dane import insecure_mx_policy
from delivery_smtp.generic import GenericMaps
from delivery_smtp.mta_sts import MtaSts
from delivery_smtp.reuse import SessionCache
from delivery_smtp.sasl_auth import SaslClient
from delivery_smtp.settings import Settings
from delivery_smtp.tls_client import ClientTls
from delivery_smtp.tls_policy import TlsPolicies
from postbus.config.loader import Config
from postbus.delivery import Outcome, Stats, log_delivery
from postbus.hbc import ChecksUnavailable, DeliveryChecks
from postbus.job_loop import Deliver
from postbus.maps.table import TableRetry
from postbus.queue.entry import DeliveryJob, RcptResult

log = logging.getLogger("postbus.delivery")


def is_lmtp(cfg: Config, service: str) -> bool:
    """True when master.cf runs ``service`` with the lmtp command."""
    for entry in cfg.master:
        if entry.service == service and entry.command in ("smtp", "lmtp"):
            return entry.command == "lmtp"
    return service == "lmtp"


def build(cfg: Config, service: str) -> Connector:
    lmtp = is_lmtp(cfg, service)
    settings = Settings.from_config(cfg, lmtp)
    prefix = "lmtp" if lmtp else "smtp"
    use_dns = not cfg.bool("disable_dns_lookups") and (
        cfg.get("smtp_dns_support_level").strip().lower() != "disabled"
    ) and "dns" in [w.lower() for w in cfg.list(f"{prefix}_host_lookup")]
    resolver = HostResolver(
        use_dns=use_dns,
        dns_servers=cfg.list("postbus_dns_servers"),
        families=families(cfg.list("inet_protocols")),
        dnssec=cfg.get("smtp_dns_support_level").strip().lower() == "dnssec",
    )
    cache = SessionCache(
        idle_limit=cfg.time("smtp_connection_cache_time_limit"),
        time_limit=cfg.time("smtp_connection_reuse_time_limit"),
        count_limit=cfg.int("smtp_connection_reuse_count_limit"),
        quit_timeout=settings.quit_timeout,
    )
    return Connector(
        settings,
        resolver,
        cache,
        caching=cfg.bool("smtp_connection_cache_on_demand"),
        address_limit=cfg.int("smtp_mx_address_limit") or 1000,
        session_limit=cfg.int("smtp_mx_session_limit") or 1000,
        tls=(TlsPolicies(cfg, lmtp), ClientTls(cfg, lmtp)),
        min_backoff=cfg.time("minimal_backoff_time"),
        sts=MtaSts(cfg, resolver) if cfg.bool("postbus_mta_sts") and not lmtp else None,
        sasl=SaslClient(cfg, lmtp),
        dane_mx_policy=insecure_mx_policy(cfg),
    )


def agent(cfg: Config, service: str, connector: Connector) -> Deliver:
    """The per-job delivery function: deliver, then log each recipient as Postfix does."""
    resolution = cfg.int("delay_logging_resolution_limit")
    checks = DeliveryChecks(cfg, is_lmtp(cfg, service))  # smtp_header_checks and the rest
    generic = GenericMaps(cfg, is_lmtp(cfg, service))

    async def deliver(job: DeliveryJob, content: bytes, stats: Stats) -> list[RcptResult]:
        # as smtp_header_rewrite(): the checks first, then smtp_generic_maps
        sent_job, sent = job, content
        try:
            if checks:
                sent = await checks.apply(job.queue_id, sent)
        except ChecksUnavailable as exc:
            log.warning("%s", exc)
            failed = Outcome("deferred", "4.3.0", "smtp header checks lookup error")
            outcomes, relay = [failed] * len(job.recipients), "none"
        else:
            try:
                if generic:
                    sent_job, sent = await generic.job(job), await generic.content(sent)
            except TableRetry as exc:  # Postfix's smtp dies (msg_fatal); its qmgr defers
                log.warning("%s: %s map lookup problem: %s", job.queue_id, generic.param, exc)
                failed = Outcome("deferred", "4.3.0", "unknown mail transport error")
                outcomes, relay = [failed] * len(job.recipients), "none"
            else:
                outcomes, relay = await connector.deliver(sent_job, sent, stats)
        now = time.time()
        results = []
        for index, rcpt, outcome in zip(job.indexes, job.recipients, outcomes, strict=True):
            log_delivery(
                job.queue_id, rcpt, relay, stats, outcome.dsn, outcome.status, outcome.reason,
                transport=service, resolution=resolution, now=now,
            )
            results.append(RcptResult(index, outcome.status, outcome.dsn, outcome.reason, relay))
        return results

    return deliver
