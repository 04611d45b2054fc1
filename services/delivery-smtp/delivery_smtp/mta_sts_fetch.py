"""Fetching an MTA-STS policy file (RFC 8461 §3.3).

``GET https://mta-sts.<domain>/.well-known/mta-sts.txt`` over a validated
TLS connection (WebPKI: the system store, or postbus_mta_sts_ca_file); no
redirects, only ``200`` with ``text/plain``, at most 64 KiB, within
postbus_mta_sts_timeout. The host is found with the agent's own resolver
(postbus_dns_servers), so tests need no system DNS. A failure is a
:class:`FetchError` whose ``kind`` is the RFC 8460 result type it reports as.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from delivery_smtp.addr import HostLookupError, HostResolver

LIMIT = 64 * 1024
PATH = "/.well-known/mta-sts.txt"


class FetchError(Exception):
    """Why no policy came; ``kind``: sts-policy-fetch-error, sts-webpki-invalid or
    sts-policy-invalid."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


def https_context(ca_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def fetch_policy(resolver: HostResolver, domain: str, port: int,
                       context: ssl.SSLContext, timeout: float) -> str:
    """The policy text of ``domain``; FetchError when there is none to be had."""
    host = f"mta-sts.{domain}"
    try:
        async with asyncio.timeout(timeout):
            try:
                targets = await resolver.host_targets(host, port)
            except HostLookupError as exc:
                raise FetchError("sts-policy-fetch-error", str(exc)) from exc
            last = FetchError("sts-policy-fetch-error", f"{host}: no address")
            for target in targets:
                try:
                    return await _get(target.addr, port, host, context)
                except FetchError as exc:
                    if exc.kind != "sts-policy-fetch-error":
                        raise
                    last = exc
            raise last
    except TimeoutError as exc:
        raise FetchError("sts-policy-fetch-error", f"{host}: timed out") from exc


async def _get(addr: str, port: int, host: str, context: ssl.SSLContext) -> str:
    where = f"https://{host}{PATH}" + (f" (port {port})" if port != 443 else "")
    try:
        reader, writer = await asyncio.open_connection(addr, port, ssl=context,
                                                       server_hostname=host, limit=LIMIT)
    except ssl.SSLCertVerificationError as exc:
        raise FetchError("sts-webpki-invalid",
                         f"{where}: certificate verification failed: {exc.verify_message}"
                         ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise FetchError("sts-policy-fetch-error", f"{where}: {exc}") from exc
    try:
        writer.write(f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Postbus\r\n"
                     "Accept: text/plain\r\nConnection: close\r\n\r\n".encode())
        return await _response(reader, where)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
            ValueError) as exc:
        raise FetchError("sts-policy-fetch-error", f"{where}: {exc or type(exc).__name__}"
                         ) from exc
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _response(reader: asyncio.StreamReader, where: str) -> str:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status, *lines = head.split("\r\n")
    parts = status.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise FetchError("sts-policy-fetch-error", f"{where}: not an HTTP response")
    if parts[1] != "200":  # redirects are not followed (RFC 8461 §3.3)
        raise FetchError("sts-policy-fetch-error", f"{where}: HTTP status {' '.join(parts[1:])}")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "text/plain":
        raise FetchError("sts-policy-invalid", f"{where}: media type {ctype or 'none'}")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _chunked(reader, where)
    elif "content-length" in headers:
        size = int(headers["content-length"])
        if size > LIMIT:
            raise FetchError("sts-policy-invalid", f"{where}: larger than 64 KiB")
        body = await reader.readexactly(size)
    else:
        body = await reader.read(LIMIT + 1)
        while len(body) <= LIMIT and (more := await reader.read(LIMIT + 1 - len(body))):
            body += more
    if len(body) > LIMIT:
        raise FetchError("sts-policy-invalid", f"{where}: larger than 64 KiB")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FetchError("sts-policy-invalid", f"{where}: not UTF-8") from exc


async def _chunked(reader: asyncio.StreamReader, where: str) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            return body
        if len(body) + size > LIMIT:
            raise FetchError("sts-policy-invalid", f"{where}: larger than 64 KiB")
        body += await reader.readexactly(size)
        await reader.readexactly(2)
