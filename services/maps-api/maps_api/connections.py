"""A small asyncio stream server that tracks its connections (for a clean stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("postbus.maps_api")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class StreamServer:
    """``asyncio.start_server``; connection errors are logged, never raised; stop() closes all."""

    def __init__(self, name: str, handler: Handler, limit: int = 2**16) -> None:
        self.name = name
        self.handler = handler
        self.limit = limit
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, host, port, limit=self.limit)
        sockname = self.server.sockets[0].getsockname()
        log.info("%s server listening on %s:%s", self.name, sockname[0], sockname[1])
        return sockname[0], sockname[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.error("%s: error serving %s", self.name, peer, exc_info=True)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self.tasks.discard(task)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
