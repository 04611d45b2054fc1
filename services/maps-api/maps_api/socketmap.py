"""The socketmap protocol server (socketmap_table(5)), so Postfix can read Postbus tables.

Postfix, configured with ``socketmap:inet:HOST:PORT:NAME``, sends the
netstring ``NAME SPACE KEY`` and expects one netstring back:

* ``OK value`` (found), ``NOTFOUND `` (not found);
* ``TEMP reason`` (a table could not answer: Redis down, file missing);
* ``TIMEOUT reason`` (the lookup took longer than :data:`LOOKUP_TIMEOUT`);
* ``PERM reason`` (no such table name, table not approved, bad request).

NAME is resolved by :meth:`maps_api.tables.TableService.resolve_name`.
A connection serves any number of requests.  A malformed netstring (a
non-digit length, a length over :data:`MAX_REQUEST`, a missing ``,``)
loses the framing, so it gets ``PERM protocol error: ...``, a warning is
logged and the connection is closed; so does a frame that is not complete
:data:`REQUEST_TIMEOUT` seconds after its first byte.  A connection idle
between requests is closed after :data:`IDLE_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import logging

from maps_api.connections import Handler
from maps_api.tables import NotApproved, TableService, UnknownName
from postbus.logging import peer_name
from postbus.maps import netstring
from postbus.maps.table import TableRetry

log = logging.getLogger("postbus.maps_api")

MAX_REQUEST = 100000  # bytes of name + key, as Postfix's socketmap reply limit
IDLE_TIMEOUT = 100.0  # seconds a client may stay silent between requests
REQUEST_TIMEOUT = 30.0  # seconds from the first byte of a request to its last
LOOKUP_TIMEOUT = 30.0  # seconds before a lookup is answered TIMEOUT


async def answer(tables: TableService, request: bytes) -> bytes:
    """The reply (without netstring framing) to one request."""
    name, sep, key = request.decode("utf-8", "surrogateescape").partition(" ")
    if not sep or not name:
        return b"PERM bad request: need name SPACE key"
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT):
            specs = await tables.resolve_name(name)
            value = await tables.lookup_first(specs, key)
    except TimeoutError:
        return b"TIMEOUT lookup took longer than %ds" % LOOKUP_TIMEOUT
    except TableRetry as exc:
        return _reply("TEMP", str(exc))
    except (UnknownName, NotApproved) as exc:
        return _reply("PERM", str(exc))
    except Exception as exc:  # a bug must not look like "not found"
        log.error("socketmap lookup of %s in %s failed", key, name, exc_info=True)
        return _reply("TEMP", f"internal error: {type(exc).__name__}")
    if value is None:
        return b"NOTFOUND "
    return _reply("OK", value)


def _reply(status: str, text: str) -> bytes:
    return f"{status} {text}".encode("utf-8", "surrogateescape")


def handler(
    tables: TableService,
    *,
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
) -> Handler:
    """The per-connection coroutine of the socketmap server."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await netstring.read_netstring(
                    reader, MAX_REQUEST, idle_timeout=idle_timeout, timeout=request_timeout
                )
            except asyncio.IncompleteReadError:
                return  # the client closed between requests
            except TimeoutError:
                log.info("socketmap: idle timeout after %gs from %s", idle_timeout,
                         peer_name(writer))
                return
            except netstring.NetstringError as exc:
                log.warning("socketmap: protocol error from %s: %s", peer_name(writer), exc)
                writer.write(netstring.encode(_reply("PERM", f"protocol error: {exc}")))
                await writer.drain()
                return
            writer.write(netstring.encode(await answer(tables, request)))
            await writer.drain()

    return serve
