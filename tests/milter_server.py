"""A small milter for the tests: an asyncio server speaking the Sendmail milter protocol.

Written from the protocol documentation, independently of postbus.milter, so the
client is tested against a second reading of the wire format. ``replies`` maps an
event letter (``C`` connect, ``H`` helo, ``M`` mail, ``R`` rcpt, ``T`` data, ``L``
header, ``N`` end of headers, ``B`` body, ``E`` end of message) to a function of the
event's data that returns the packets to answer with, or one of ``"hang"`` (never
answer), ``"late"`` (answer after 2.5 s), ``"close"`` (hang up), ``"garbage"`` (bytes
that are no packet). Every
event is recorded with the macros that came before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Action = Callable[[bytes], list[bytes] | str] | list[bytes] | str


def pkt(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd + data


#: in a list of replies: hang up there
HANG_UP = b"<hang up>"

CONTINUE, ACCEPT, REJECT, TEMPFAIL, DISCARD = (pkt(b"c"), pkt(b"a"), pkt(b"r"), pkt(b"t"),
                                               pkt(b"d"))


def z(*parts: str) -> bytes:
    return b"".join(p.encode() + b"\0" for p in parts)


def addheader(name: str, value: str) -> bytes:
    return pkt(b"h", z(name, value))


def insheader(index: int, name: str, value: str) -> bytes:
    return pkt(b"i", struct.pack(">I", index) + z(name, value))


def chgheader(index: int, name: str, value: str) -> bytes:
    return pkt(b"m", struct.pack(">I", index) + z(name, value))


def addrcpt(addr: str) -> bytes:
    return pkt(b"+", z(addr))


def delrcpt(addr: str) -> bytes:
    return pkt(b"-", z(addr))


def chgfrom(addr: str) -> bytes:
    return pkt(b"e", z(addr))


def replbody(body: bytes) -> bytes:
    return pkt(b"b", body)


def quarantine(reason: str) -> bytes:
    return pkt(b"q", z(reason))


def replycode(text: str) -> bytes:
    return pkt(b"y", z(text))


@dataclass
class ScriptedMilter:
    replies: dict[str, Action] = field(default_factory=dict)
    version: int = 6
    actions: int = 0x1FF
    protocol: int = 0  # the events it does not want, the replies it will not send
    symlists: bytes = b""  # SMFIR_SETSYMLIST lists after the OPTNEG reply
    events: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    connections: int = 0
    last_sender: str = ""  # of the transaction under way: scripts may decide by it
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _hung: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> ScriptedMilter:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def name(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for w in self._hung:
            w.close()
        if self._server is not None:
            self._server.close()

    def seen(self, letter: str) -> list[bytes]:
        return [data for event, data, _ in self.events if event == letter]

    def macros(self, letter: str) -> dict[str, str]:
        return next(m for event, _, m in self.events if event == letter)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        macros: dict[str, str] = {}
        try:
            while True:
                head = await reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                body = await reader.readexactly(length)
                cmd, data = body[:1].decode(), body[1:]
                if cmd == "O":
                    writer.write(pkt(b"O", struct.pack(">III", self.version, self.actions,
                                                       self.protocol) + self.symlists))
                    continue
                if cmd == "D":
                    parts = data[1:].split(b"\0")[:-1]
                    macros = {parts[i].decode(): parts[i + 1].decode()
                              for i in range(0, len(parts) - 1, 2)}
                    continue
                if cmd in "AQK":
                    if cmd == "Q":
                        break
                    continue
                self.events.append((cmd, data, macros))
                if cmd == "M":
                    self.last_sender = data.split(b"\0")[0].decode()
                action = self.replies.get(cmd, [CONTINUE])
                if callable(action):
                    action = action(data)
                if action == "hang":
                    self._hung.append(writer)
                    await reader.read()  # until the client goes away
                    return
                if action == "close":
                    return
                if action == "late":  # answers, but after the client's timeout
                    await asyncio.sleep(2.5)
                    action = [CONTINUE]
                if action == "garbage":
                    writer.write(b"\x00\x00\x00\x05zzzzz")
                    await writer.drain()
                    continue
                if cmd == "L" and self.protocol & 0x80:
                    continue  # no reply per header
                assert isinstance(action, list)
                for p in action:
                    if p is HANG_UP:
                        await writer.drain()
                        return
                    writer.write(p)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@contextlib.contextmanager
def milter_thread(milter: ScriptedMilter) -> Iterator[ScriptedMilter]:
    """``milter`` served from a thread of its own (for a module-scoped Postfix)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(milter.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield milter
    finally:
        asyncio.run_coroutine_threadsafe(milter.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
