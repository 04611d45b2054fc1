"""The remote side of MTA-STS tests: a policy HTTPS server and a DNS zone on loopback.

The HTTPS server is a small asyncio server with a certificate from the test CA; it serves
``policy`` (or ``status`` when not 200) and counts the requests it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.tls_certs import Pki

from .peers import DnsServer, Peer


class PolicyServer:
    """``https://mta-sts.<domain>/.well-known/mta-sts.txt`` on 127.0.0.1."""

    def __init__(self, context: ssl.SSLContext, policy: str) -> None:
        self.context = context
        self.policy = policy
        self.status = 200
        self.stall = asyncio.Event()  # while clear with ``stalling``, requests get no answer
        self.stalling = False
        self.requests: list[str] = []
        self.posts: list[tuple[str, str, bytes]] = []  # (request line, content type, body)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> PolicyServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.stall.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            first, *lines = head.split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
            if first.startswith("POST "):
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                self.posts.append((first, fields.get("content-type", ""), body))
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            self.requests.append(first)
            if self.stalling:
                await self.stall.wait()
                return
            body = self.policy.encode() if self.status == 200 else b"no\r\n"
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Type: text/plain\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def policy_text(mode: str, *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx),
             f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def zone(sts_id: str | None, tlsrpt: str | None = None) -> dict[tuple[str, str], list[str]]:
    """remote.test: MX mx.remote.test, both on 127.0.0.1, with a _mta-sts record (or none)."""
    records = {
        ("remote.test", "MX"): ["10 mx.remote.test."],
        ("mx.remote.test", "A"): ["127.0.0.1"],
        ("mta-sts.remote.test", "A"): ["127.0.0.1"],
    }
    if sts_id is not None:
        records[("_mta-sts.remote.test", "TXT")] = [f'"v=STSv1; id={sts_id}"']
    if tlsrpt is not None:
        records[("_smtp._tls.remote.test", "TXT")] = [f'"{tlsrpt}"']
    return records


def set_txt(dns: DnsServer, name: str, text: str) -> None:
    dns.zone[(name, "TXT")] = [f'"{text}"']
    dns.names.add(name)


def mx_peer(pki: Pki, cn: str = "mx.remote.test", other_ca: Path | None = None) -> Peer:
    """An aiosmtpd server with STARTTLS and a certificate naming ``cn`` (signed by our CA,
    or by a CA of its own when ``other_ca`` is a directory for it)."""
    signer = Pki.create(other_ca) if other_ca is not None else pki
    cert, key = signer.server(f"mx-{cn}", cn=cn)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return Peer(tls_context=context)


def https_context(pki: Pki) -> ssl.SSLContext:
    cert, key = pki.server("mta-sts", cn="mta-sts.remote.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@dataclass
class Remote:
    pki: Pki
    dns: DnsServer
    https: PolicyServer

    def settings(self, **more: str) -> dict[str, str]:
        return {
            "smtp_connection_cache_on_demand": "no", "myhostname": "mail.postbus.test",
            "postbus_dns_servers": f"127.0.0.1:{self.dns.port}", "postbus_mta_sts": "yes",
            "postbus_mta_sts_ca_file": str(self.pki.ca_file),
            "postbus_mta_sts_https_port": str(self.https.port),
            "postbus_mta_sts_cache_refresh": "0", "postbus_tlsrpt": "yes",
            "smtp_tls_CAfile": str(self.pki.ca_file), "smtp_tls_loglevel": "1", **more,
        }


@contextlib.asynccontextmanager
async def remote_peers(tmp_path: Path) -> AsyncIterator[Remote]:
    """remote.test's DNS (_mta-sts id 1) and its policy server (enforce, mx.remote.test)."""
    pki = Pki.create(tmp_path / "pki")
    dns = await DnsServer(zone("1")).start()
    https = await PolicyServer(https_context(pki), policy_text("enforce", "mx.remote.test"))\
        .start()
    made = Remote(pki, dns, https)
    try:
        yield made
    finally:
        dns.close()
        await made.https.close()
