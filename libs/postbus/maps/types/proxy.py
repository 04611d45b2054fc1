"""``proxy:type:name`` tables, looked up through maps-api (≈ dict_proxy.c and proxymap(8)).

``proxy:hash:/etc/postbus/virtual`` asks maps-api's HTTP interface
``GET {url}/v1/tables/hash:/etc/postbus/virtual/lookup?key=...``:

* 200 with ``{"value": ...}``: found;
* 404 with ``{"found": false}``: not found (any other 404, e.g. a wrong
  URL, is an error);
* anything else (5xx, 400 bad table, 403 table not in ``proxy_read_maps``),
  a malformed answer, a timeout or a connection error: :class:`TableRetry`.
  A proxied table that cannot be asked is never "not found".

The URL comes from :func:`configure` (services call it with the value of
``postbus_maps_api_url``); it defaults to ``http://127.0.0.1:10080``.  One
``httpx.AsyncClient`` per event loop keeps connections open.  The table is
fixed-key or pattern as the proxied table is, exactly as proxymap reports
the proxied table's flags to the client.
"""

from __future__ import annotations

import asyncio
import urllib.parse

import httpx

from postbus.maps.table import Table, TableConfigError, TableRetry, log, open_table, register_type

__all__ = ["DEFAULT_URL", "ProxyTable", "aclose", "configure", "lookup_url"]

DEFAULT_URL = "http://127.0.0.1:10080"
TIMEOUT = 30.0  # seconds for one HTTP lookup

_settings = {"url": DEFAULT_URL}
_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def configure(url: str) -> None:
    """Set maps-api's base URL (the ``postbus_maps_api_url`` parameter)."""
    _settings["url"] = url.rstrip("/") or DEFAULT_URL


def lookup_url(base: str, spec: str) -> str:
    """The lookup URL of table ``spec`` (quoted, keeping ``:`` and ``/`` readable)."""
    return f"{base}/v1/tables/{urllib.parse.quote(spec, safe=':/@')}/lookup"


def _client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        for old in [lp for lp in _clients if lp.is_closed()]:
            del _clients[old]  # clients of finished loops (tests) cannot be reused
        client = httpx.AsyncClient(
            timeout=TIMEOUT, limits=httpx.Limits(max_keepalive_connections=32)
        )
        _clients[loop] = client
    return client


async def aclose() -> None:
    """Close this event loop's HTTP client (at service shutdown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


class ProxyTable(Table):
    """A table maps-api looks up on our behalf."""

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        if not name or name.startswith("proxy:") or ":" not in name:
            raise TableConfigError(f'bad proxy table "{spec}"; need proxy:type:name')
        self.proxied = name
        self.fixed = open_table(name).fixed  # the proxied table's flags, as proxymap reports

    async def lookup(self, key: str) -> str | None:
        url = lookup_url(_settings["url"], self.proxied)
        try:
            response = await _client().get(url, params={"key": key})
        except httpx.HTTPError as exc:
            reason = f"maps-api {_settings['url']}: {exc or type(exc).__name__}"
            log.warning("%s lookup error for \"%s\": %s", self.spec, key, reason)
            raise TableRetry(f"{self.spec}: {reason}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            if response.status_code == 404 and body.get("found") is False:
                return None
            value = body.get("value")
            if response.status_code == 200 and isinstance(value, str):
                return value
        reason = f"maps-api status {response.status_code}: {_detail(response)}"
        log.warning("%s lookup error for \"%s\": %s", self.spec, key, reason)
        raise TableRetry(f"{self.spec}: {reason}")


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:200] or "no reason given"


register_type("proxy", ProxyTable)
