"""One webhook POST and what came of it.

Any 2xx reply is success. Everything else fails this attempt and is tried
again later: another status (redirects are not followed: a moved endpoint is
a configuration matter), a refused or reset connection, a TLS failure, or no
whole reply within ``postbus_webhook_timeout`` (one limit for the whole
request, not per read). ``HTTPS_PROXY`` and ``NO_PROXY`` from the environment
are honoured.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import httpx

from postbus import metrics
from webhooks import sign
from webhooks.settings import Settings

USER_AGENT = "Postbus-Webhooks/0.1.0"
MAX_REPLY = 64 * 1024  # bytes of a reply body read at most (only a snippet is logged)

# httpx logs every request with its whole URL (a query may hold a token); we log our own lines
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # "200 OK", or what went wrong, for the log and the dead-letter record
    seconds: float


class Sender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=settings.concurrency,
                                max_keepalive_connections=settings.concurrency),
            follow_redirects=False,
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )

    @property
    def hostport(self) -> str:
        url = httpx.URL(self.settings.url)
        return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, body: bytes, event_id: str, kind: str, attempt: int) -> Outcome:
        """POST one event, signed anew (its timestamp is this attempt's)."""
        headers = sign.headers(self.settings.keys, event_id, int(time.time()), body)
        headers["postbus-event-kind"] = kind
        headers["postbus-attempt"] = str(attempt)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.timeout):
                ok, detail = await self._send(body, headers)
        except TimeoutError:
            ok, detail = False, f"no reply within {self.settings.timeout:g}s"
        except httpx.ConnectError as exc:
            ok, detail = False, f"connect to {self.hostport}: {_os_reason(exc)}"
        except httpx.HTTPError as exc:
            ok, detail = False, _describe(exc)
        except Exception as exc:  # whatever else a peer provokes fails this attempt only
            ok, detail = False, f"{type(exc).__name__}: {_describe(exc)}"
        seconds = time.monotonic() - started
        metrics.webhook_latency.labels(self.settings.name).observe(seconds)
        metrics.webhook_requests.labels(self.settings.name, "sent" if ok else "failed").inc()
        return Outcome(ok, detail, seconds)

    async def _send(self, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        async with self.client.stream("POST", self.settings.url, content=body,
                                      headers=headers) as reply:
            text = b""
            async for chunk in reply.aiter_bytes():
                text += chunk
                if len(text) >= MAX_REPLY:
                    break
        detail = f"{reply.status_code} {reply.reason_phrase}".strip()
        ok = 200 <= reply.status_code < 300
        if not ok and text:
            snippet = " ".join(text[:200].decode("utf-8", "replace").split())
            detail += f": {snippet}"
        return ok, detail


def _describe(exc: Exception) -> str:
    """A short reason: the exception's own text, or its cause's when empty."""
    text = str(exc) or str(exc.__cause__ or "") or type(exc).__name__
    return " ".join(text.split())[:300]


def _os_reason(exc: Exception) -> str:
    """The system's words for a failed connection ("Connection refused"), found
    under the wrappers httpx adds; else the exception's own text."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            if seen.errno > 0:
                return os.strerror(seen.errno)
            return seen.strerror or str(seen)  # a resolver error (gaierror)
        seen = seen.__cause__ or seen.__context__
    return _describe(exc)
