"""Fixtures for the delivery agents: a real nats-server, the queue, jobs in, statuses out.

The agent under test runs in-process through its real ``main`` (the shared
job loop on a durable JetStream consumer); the remote side is a real
server on loopback (aiosmtpd, or Postfix's smtp-sink where installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from postbus.bus import subjects as s
from postbus.bus.jetstream import connect, ensure_streams
from postbus.config.loader import Config
from postbus.maps import context
from postbus.queue.admin import Bus as QueueBus
from postbus.queue.entry import DeliveryJob, DeliveryStatus, QueueEntry, Recipient
from postbus.queue.file import QueueFile
from postbus.queue.work import WorkBus
from postbus.servers import ServerProcess
from postbus.service import ServiceContext

MASTER_CF = """\
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
"""

MESSAGE = (
    b"Received: from client.test (client.test [127.0.0.1])\r\n"
    b"\tby mail.postbus.test (Postbus) with ESMTP id QID\r\n"
    b"From: alice@postbus.test\r\nTo: bob@remote.test\r\nSubject: hello\r\n"
    b"Message-ID: <1@postbus.test>\r\n\r\n"
    b"Hello Bob.\r\n.leading dot\r\nFrom the start of a line\r\n"
)


@dataclass
class Bus:
    nc: NATS
    store: QueueBus

    async def submit(
        self,
        transport: str,
        nexthop: str,
        recipients: list[str] | list[Recipient],
        content: bytes = MESSAGE,
        sender: str = "alice@postbus.test",
        age: float = 0.0,
        job: dict[str, Any] | None = None,
        **entry: Any,
    ) -> DeliveryJob:
        """Queue the content and hand out one delivery job, as the qmgr would
        (``age``: seconds the message has already waited in the queue; ``job``: more
        DeliveryJob fields; ``entry``: more QueueEntry fields)."""
        rcpts = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
        qid = await self.store.queue.enqueue(QueueEntry("", sender, rcpts, **entry), content)
        now = time.time()
        got = await self.store.queue.get(qid)
        assert got is not None
        entry = got[0]
        made = DeliveryJob(
            queue_id=qid, transport=transport, nexthop=nexthop, sender=sender,
            recipients=rcpts, indexes=list(range(len(rcpts))), attempt=1,
            arrival_time=entry.arrival_time - age, size=entry.size, chunks=entry.chunks,
            queued_time=now, active_time=now, attempt_id=entry.attempt_id, **(job or {}),
        )
        await self.store.work.submit_job(made)
        return made

    async def status(self, queue_id: str, timeout: float = 20.0) -> DeliveryStatus:
        """The one DeliveryStatus the agent reports for a message."""
        js = self.nc.jetstream()
        sub = await js.pull_subscribe(s.status_subject(queue_id), stream=s.WORK_STREAM)
        try:
            msgs = await sub.fetch(1, timeout=timeout)
            await msgs[0].ack()
            return DeliveryStatus.decode(msgs[0].data)
        finally:
            await sub.unsubscribe()


@pytest.fixture
async def bus(nats: ServerProcess, redis: ServerProcess) -> AsyncIterator[Bus]:
    """The bus, and Redis for the destination windows every agent passes."""
    context.configure(f"{redis.url}/0")
    nc = await connect(nats.url, "delivery-test")
    await ensure_streams(nc.jetstream())
    js = nc.jetstream()
    yield Bus(nc, QueueBus(QueueFile(nc, js), WorkBus(nc, js)))
    with contextlib.suppress(Exception):
        await nc.close()
    await context.aclose()


Main = Callable[[ServiceContext], Coroutine[Any, Any, None]]


class RunAgent:
    """Starts agents' ``main`` in-process; ``stop()`` drains them (also done at teardown)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.running: list[tuple[ServiceContext, asyncio.Task[None]]] = []

    async def __call__(self, main: Main, service: str, settings: dict[str, str]) -> ServiceContext:
        text = "".join(f"{k} = {v}\n" for k, v in {"postbus_ack_wait": "10s", **settings}.items())
        cfg = Config.from_text(text, MASTER_CF, service=service)
        program = "local" if service in ("local", "virtual") else "smtp"
        ctx = ServiceContext(
            cfg=cfg, program=program, service=service, nc=self.bus.nc,
            queue_file=self.bus.store.queue, work_bus=self.bus.store.work,
        )
        self.running.append((ctx, asyncio.create_task(main(ctx))))
        return ctx

    async def stop(self) -> None:
        """Stop every agent, closing its cached sessions (before the peer goes away)."""
        for ctx, _ in self.running:
            ctx.stopping.set()
        for _, task in self.running:
            await asyncio.wait_for(task, 15)
        self.running.clear()


@pytest.fixture
async def run_agent(bus: Bus) -> AsyncIterator[RunAgent]:
    agents = RunAgent(bus)
    yield agents
    await agents.stop()


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package postfix)")
    return path
