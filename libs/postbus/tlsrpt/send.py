"""Sending the TLS-RPT reports of one day, once across every replica.

For each policy domain with results that day, the ``_smtp._tls.<domain>``
TXT record (asked of postbus_dns_servers) gives the ``rua`` URIs: a
``mailto:`` report is queued like mail from ``postbus sendmail`` (cleanup,
then the queue: it is delivered, deferred and bounced like any other), an
``https:`` one is POSTed as ``application/tlsrpt+gzip``. Domains without a
record get no report. :func:`daily` runs in every smtp agent with
postbus_tlsrpt = yes and sends yesterday's reports when a Redis lock says
no other replica has; ``postbus tlsrpt --send-now`` sends a day's at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import defaultdict
from urllib.parse import unquote

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import httpx
from redis.asyncio import Redis

from postbus.cleanup import Cleanup, Origin
from postbus.config.loader import Config
from postbus.dns_config import async_resolver
from postbus.queue.admin import open_queue
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.ids import new_queue_id
from postbus.tlsrpt import report
from postbus.tlsrpt.store import KEEP, PREFIX, DayEntry, day_entries, day_of

log = logging.getLogger("postbus.tlsrpt")


def reporter(cfg: Config) -> report.Reporter:
    return report.Reporter(cfg.get("postbus_tlsrpt_reporting_org"),
                           cfg.get("postbus_tlsrpt_submitter"),
                           cfg.get("postbus_tlsrpt_contact"))


def resolver(cfg: Config) -> dns.asyncresolver.Resolver:
    """postbus_dns_servers (``host`` or ``host:port``), else the system's resolver."""
    return async_resolver(cfg.list("postbus_dns_servers"))


async def rua(dns_resolver: dns.asyncresolver.Resolver, domain: str) -> list[str]:
    """Where ``domain`` wants its reports ([] when it publishes no TLSRPT record)."""
    try:
        answer = await dns_resolver.resolve(f"_smtp._tls.{domain}", "TXT", search=False)
    except dns.exception.DNSException:
        return []
    return report.parse_rua([b"".join(r.strings).decode("utf-8", "replace") for r in answer])


async def inject(cfg: Config, sender: str, rcpts: list[str], content: bytes) -> str:
    """Queue a message as ``postbus sendmail`` does (the caller's tables context)."""
    long_ids = cfg.bool("enable_long_queue_ids")
    entry = QueueEntry(queue_id=new_queue_id(long_ids), sender=sender,
                       recipients=[Recipient(r) for r in rcpts], client_name="localhost",
                       client_addr="127.0.0.1", protocol="sendmail")
    cleanup = Cleanup(cfg)
    build = await cleanup.message(entry, content, context="local", mapping=cleanup.mapping,
                                  filter=cleanup.filter, origin=Origin(origin="local"),
                                  bounce=True)
    async with open_queue(cfg, "tlsrpt") as store:
        return await store.queue.enqueue(entry, b"", long_ids, build=build,
                                         queue_id=entry.queue_id)


async def send_day(cfg: Config, redis: Redis, day: str) -> list[str]:
    """Send ``day``'s reports; one line per report sent (for the log and the command)."""
    by_domain: dict[str, list[DayEntry]] = defaultdict(list)
    for entry in await day_entries(redis, day):
        by_domain[entry.domain].append(entry)
    who = reporter(cfg)
    dns_resolver = resolver(cfg)
    done: list[str] = []
    for domain, entries in sorted(by_domain.items()):
        uris = await rua(dns_resolver, domain)
        if not uris:
            continue
        built = report.build(who, day, entries)
        mailto = [unquote(u[7:]) for u in uris if u.lower().startswith("mailto:")]
        if mailto:
            qid = await inject(cfg, who.contact, mailto, report.mail(who, built, mailto))
            done.append(f"{qid}: TLS-RPT report {built['report-id']} for {domain} "
                        f"to {', '.join(mailto)}")
        for uri in (u for u in uris if u.lower().startswith("https:")):
            done.append(await _post(cfg, dns_resolver, uri, built, domain))
    for line in done:
        log.info("%s", line)
    return done


async def _post(cfg: Config, dns_resolver: dns.asyncresolver.Resolver, uri: str,
                built: dict[str, object], domain: str) -> str:
    """POST the report; the host is looked up as the agents look names up
    (postbus_dns_servers), TLS still verified against its name."""
    ca_file = cfg.get("postbus_mta_sts_ca_file").strip()
    context = ssl.create_default_context(cafile=ca_file or None)
    url = httpx.URL(uri)
    what = f"TLS-RPT report {built['report-id']} for {domain} to {uri}"
    try:
        address = url.host
        if cfg.list("postbus_dns_servers"):
            answer = await dns_resolver.resolve(url.host, "A", search=False)
            address = str(next(iter(answer)))
        async with httpx.AsyncClient(verify=context, timeout=30.0) as client:
            got = await client.post(url.copy_with(host=address), content=report.gzipped(built),
                                    headers={"Content-Type": "application/tlsrpt+gzip",
                                             "Host": url.netloc.decode("ascii")},
                                    extensions={"sni_hostname": url.host})
        return f"{what}: {got.status_code}"
    except (httpx.HTTPError, dns.exception.DNSException) as exc:
        return f"{what} failed: {exc}"


async def send_once(cfg: Config, redis: Redis, day: str) -> list[str] | None:
    """``day``'s reports unless another replica has sent them (None then)."""
    lock = f"{PREFIX}{day}:sent"
    if not await redis.set(lock, str(time.time()), nx=True, ex=KEEP):
        return None
    try:
        return await send_day(cfg, redis, day)
    except BaseException:
        await redis.delete(lock)  # try again at the next round
        raise


async def daily(cfg: Config, redis: Redis, stopping: asyncio.Event,
                every: float = 3600.0) -> None:
    """Yesterday's reports, checked every ``every`` seconds until ``stopping``."""
    while not stopping.is_set():
        try:
            await send_once(cfg, redis, day_of(time.time() - 86400))
        except Exception as exc:  # DNS, Redis or the queue: the next round tries again
            log.warning("TLS-RPT: cannot send reports: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)
