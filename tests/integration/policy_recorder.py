"""A policy server for tests that records what it is sent and answers from a script.

It speaks the protocol through the one codec (:mod:`postbus.policy_protocol`)
on a real loopback socket (``inet``) or a Unix socket.  ``answer(request)``
gives the action text; ``None`` answers without an ``action`` attribute,
``"<close>"`` closes the connection without answering, ``"<stall>"`` never
answers, ``"<raw>TEXT"`` sends TEXT as it is.  Every request and every connection is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from postbus.policy_protocol import encode_attributes, read_attributes

Answer = Callable[[dict[str, str]], str | None]


class PolicyRecorder:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, str]] = []
        self.connections = 0
        self.closed = 0  # connections the client ended
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, unix: Path | None = None) -> PolicyRecorder:
        if unix is not None:
            self.server = await asyncio.start_unix_server(self._serve, str(unix))
        else:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                request = await read_attributes(reader, idle_timeout=600, timeout=30)
                if request is None:
                    self.closed += 1
                    break
                self.requests.append(request)
                action = self.answer(request)
                if action == "<close>":
                    break
                if action == "<stall>":
                    await asyncio.sleep(3600)
                if action is not None and action.startswith("<raw>"):
                    writer.write(action[5:].encode("utf-8", "surrogateescape"))
                    await writer.drain()
                    continue
                writer.write(encode_attributes({} if action is None else {"action": action}))
                await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self._writers:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)


@contextlib.contextmanager
def recorder_thread(answer: Answer) -> Iterator[PolicyRecorder]:
    """A recorder on its own event loop in a thread: for module-scoped fixtures that a
    separate process (a real Postfix) talks to across tests."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    recorder = asyncio.run_coroutine_threadsafe(PolicyRecorder(answer).start(), loop).result(10)
    try:
        yield recorder
    finally:
        asyncio.run_coroutine_threadsafe(recorder.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
