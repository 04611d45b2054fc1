"""Fixtures for the ingress tests: our SMTP server in-process on a real nats-server.

``smtpd(**main_cf)`` starts an :class:`SmtpServer` on a free loopback port
whose queue writer is the real queue file (the ``store`` fixture), so every
accepted message really went through JetStream.  :class:`Client` is a
small async SMTP client that returns replies as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.config.loader import Config
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry

BASE_MAIN_CF = {
    "compatibility_level": "3.6",
    "myhostname": "mx.postbus.test",
    "mydomain": "postbus.test",
    "mydestination": "$myhostname, localhost, postbus.test",
    "inet_interfaces": "loopback-only",
    "mynetworks": "10.0.0.0/8",
    "local_recipient_maps": "",
    "alias_maps": "",
    "smtpd_error_sleep_time": "0",
    "smtpd_peername_lookup": "no",
}


def make_config(**main_cf: str) -> Config:
    settings = {**BASE_MAIN_CF, **main_cf}
    text = "".join(f"{k} = {v}\n" for k, v in settings.items())
    return Config.from_text(text, "127.0.0.1:0 inet n - n - - smtpd\n")


class Client:
    """Talks SMTP on a real socket; every method returns the reply text (lines joined by \\n)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> Client:
        """A connection; with ``tls`` TLS from the start (wrapper mode, port 465)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24, ssl=tls)
        return cls(reader, writer)

    async def starttls(self, context: ssl.SSLContext) -> None:
        """The client side of the TLS handshake after ``220 Ready to start TLS``."""
        await self.writer.start_tls(context)

    async def reply(self, timeout: float = 15.0) -> str:
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                lines.append("<EOF>")
                break
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                break
        return "\n".join(lines)

    async def send(self, data: bytes | str) -> None:
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        self.writer.write(raw)
        await self.writer.drain()

    async def cmd(self, line: str) -> str:
        await self.send(line + "\r\n")
        return await self.reply()

    async def close(self) -> None:
        if self.writer.is_closing():
            return
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@dataclass
class Running:
    server: SmtpServer
    port: int
    store: Bus
    clients: list[Client] = field(default_factory=list)

    async def client(self, banner: bool = True) -> Client:
        client = await Client.connect(self.port)
        self.clients.append(client)
        if banner:
            assert (await client.reply()).startswith("220 ")
        return client


StartSmtpd = Callable[..., Awaitable[Running]]


@pytest.fixture
async def smtpd(store: Bus) -> AsyncIterator[StartSmtpd]:
    """Start our server with main.cf overrides; messages go to the real queue."""
    async with running_servers(store) as start:
        yield start


@contextlib.asynccontextmanager
async def running_servers(store: Bus) -> AsyncIterator[StartSmtpd]:
    started: list[Running] = []

    async def start(**main_cf: str) -> Running:
        cfg = make_config(**main_cf)
        long_ids = cfg.bool("enable_long_queue_ids")

        async def write(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
            return await store.queue.enqueue(entry, b"", long_ids, build=build,
                                             queue_id=entry.queue_id)

        server = SmtpServer(cfg, write, listener="test")
        bound = await server.start("127.0.0.1", 0)
        started.append(Running(server, bound[0][1], store))
        return started[-1]

    try:
        yield start
    finally:
        for run in started:
            for client in run.clients:
                await client.close()
            await run.server.stop(grace=1.0)
