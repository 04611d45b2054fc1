"""``socketmap:`` client tables (≈ dict_sockmap.c, socketmap_table(5)).

``socketmap:inet:host:port:name`` or ``socketmap:unix:/path:name`` sends
each query as the netstring ``name key`` and reads one netstring reply:

* ``OK value``: found; ``NOTFOUND `` (or ``OK`` without a value): not found;
* ``TEMP reason``, ``TIMEOUT reason``, ``PERM reason``, a malformed reply,
  or a connection error: :class:`TableRetry` (Postfix's DICT_ERR_RETRY,
  or DICT_ERR_CONFIG for PERM, which is also a failed lookup).

As in Postfix the name is what follows the *last* colon, the table is a
pattern table (never asked for partial keys such as ``@domain``) and keys
are sent in their original case.  Connections are kept open and reused;
a broken reused connection is retried once, to make server restarts
transparent, exactly as dict_sockmap_lookup() does.

:class:`ConnectionPool` is shared with the ``tcp:`` client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from postbus.maps import netstring
from postbus.maps.table import Table, TableConfigError, TableRetry, log, register_type

__all__ = ["ConnectionPool", "SocketmapTable", "parse_endpoint"]

TIMEOUT = 100.0  # DICT_SOCKMAP_DEF_TIMEOUT: connect, read and write limit, seconds
MAX_REPLY = 100000  # DICT_SOCKMAP_DEF_MAX_REPLY: reply size limit, bytes
MAX_IDLE_CONNECTIONS = 8  # idle connections kept per table

Endpoint = tuple[str, str, int]  # ("inet", host, port) or ("unix", path, 0)


def parse_endpoint(text: str) -> Endpoint:
    """``inet:host:port``, ``inet:[v6]:port``, ``unix:/path`` (or ``local:``) → endpoint."""
    kind, sep, rest = text.partition(":")
    if sep and kind in ("unix", "local") and rest:
        return "unix", rest, 0
    if sep and kind == "inet":
        host, sep, port = rest.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return "inet", host, int(port)
    raise TableConfigError(f'bad socketmap endpoint "{text}"; need inet:host:port or unix:/path')


class ConnectionPool:
    """Reusable stream connections to one endpoint, for one event loop.

    :meth:`connection` yields a (reader, writer) pair and a flag telling
    whether it was reused; the caller marks it good with ``keep()`` (it goes
    back to the pool) or lets it be closed on error.
    """

    def __init__(self, endpoint: Endpoint, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def __str__(self) -> str:
        kind, host, port = self.endpoint
        return f"{kind}:{host}" if kind == "unix" else f"{kind}:{host}:{port}"

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, host, port = self.endpoint
        if kind == "unix":
            coro = asyncio.open_unix_connection(host)
        else:
            coro = asyncio.open_connection(host, port)
        return await asyncio.wait_for(coro, self.timeout)

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # connections belong to the loop that made them
            self._idle.clear()
            self._loop = loop
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    @contextlib.asynccontextmanager
    async def connection(
        self, fresh: bool = False
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, bool, list[bool]]]:
        """Yield ``(reader, writer, reused, keep)``; append True to ``keep`` to pool it after."""
        pair = None if fresh else self._take()
        reused = pair is not None
        if pair is None:
            pair = await self._open()
        reader, writer = pair
        keep: list[bool] = []
        try:
            yield reader, writer, reused, keep
        finally:
            if keep and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((reader, writer))
            else:
                writer.close()

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class SocketmapTable(Table):
    """A table answered by a socketmap server."""

    fixed = False  # DICT_FLAG_PATTERN: "don't look up parent domains or network superblocks"

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        server, sep, self.map_name = name.rpartition(":")
        if not sep or not server or not self.map_name:
            raise TableConfigError("socketmap requires server:socketmap argument")
        self.pool = ConnectionPool(parse_endpoint(server))

    async def _exchange(self, request: bytes, fresh: bool) -> bytes:
        async with self.pool.connection(fresh) as (reader, writer, reused, keep):
            try:
                writer.write(netstring.encode(request))
                await asyncio.wait_for(writer.drain(), self.pool.timeout)
                reply = await asyncio.wait_for(
                    netstring.read_netstring(reader, MAX_REPLY), self.pool.timeout
                )
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if reused:  # the server closed an idle connection: try once more
                    raise _Stale from exc
                raise
            keep.append(True)
            return reply

    async def lookup(self, key: str) -> str | None:
        request = f"{self.map_name} {key}".encode("utf-8", "surrogateescape")
        try:
            try:
                raw = await self._exchange(request, fresh=False)
            except _Stale:
                raw = await self._exchange(request, fresh=True)
        except (OSError, EOFError, TimeoutError, netstring.NetstringError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("table %s lookup error: %s", self.spec, reason)
            raise TableRetry(f"{self.spec}: {reason}") from None
        reply = raw.decode("utf-8", "surrogateescape")
        status, sep, payload = reply.partition(" ")
        if status == "OK":
            return payload if sep else None  # "OK" without a value: not found, as in Postfix
        if status == "NOTFOUND":
            return None
        error_class = {"TEMP": "temporary", "TIMEOUT": "timeout", "PERM": "permanent"}.get(
            status, "unknown"
        )
        payload = payload.lstrip()
        log.warning("%s socketmap server %s error%s%.200s", self.spec, error_class,
                    ": " if payload else "", payload)
        raise TableRetry(f"{self.spec}: socketmap server {error_class} error: {payload}")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close()


class _Stale(Exception):
    """A reused connection broke before a reply: retry once on a new one."""


register_type("socketmap", SocketmapTable)
