"""The bus's own request path (postbus.bus.requests) and consume()'s pull requests,
against a real nats-server: acknowledgements and JetStream's errors as nats.py gives
them, and every message handed to its handler while its pull request is still open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from postbus.bus.consumer import consume, keep_alive
from postbus.bus.jetstream import connect
from postbus.bus.requests import Requests
from postbus.config.loader import Config
from postbus.servers import ServerProcess
from postbus.service import ServiceContext

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats: ServerProcess) -> AsyncIterator[NATS]:
    client = await connect(nats.url, "test")
    await client.jetstream().add_stream(StreamConfig(name="T", subjects=["t.>"]))
    yield client
    await client.close()


async def test_writes_are_acknowledged_with_their_sequence_and_duplicates_said(nc: NATS) -> None:
    requests = Requests(nc)
    first = await requests.js_publish("t.a", b"one", "T", {"Nats-Msg-Id": "k1"})
    second = await requests.js_publish("t.b", b"two", "T")
    again = await requests.js_publish("t.a", b"one", "T", {"Nats-Msg-Id": "k1"})
    assert (first.seq, first.duplicate) == (1, False)
    assert (second.seq, second.duplicate) == (2, False)
    assert (again.seq, again.duplicate) == (1, True)
    stored = await nc.jetstream().get_msg("T", 2)
    assert stored.data == b"two"


async def test_the_last_message_of_a_subject_by_direct_get(nc: NATS) -> None:
    js = nc.jetstream()
    await js.update_stream(StreamConfig(name="T", subjects=["t.>"], allow_direct=True))
    requests = Requests(nc)
    await requests.js_publish("t.d", b"old", "T")
    await requests.js_publish("t.d", b"new", "T", {"X-Kept": "yes"})
    got = await requests.last_by_subject("T", "t.d")
    assert got.data == b"new" and got.headers is not None and got.headers["X-Kept"] == "yes"
    assert got.headers["Nats-Sequence"] == str((await js.get_last_msg("T", "t.d")).seq)
    with pytest.raises(NotFoundError):
        await requests.last_by_subject("T", "t.none")


async def test_jetstream_errors_are_nats_pys(nc: NATS) -> None:
    requests = Requests(nc)
    await requests.js_publish("t.c", b"x", "T")
    with pytest.raises(APIError) as wrong:
        await requests.js_publish("t.c", b"y", "T", {"Nats-Expected-Last-Subject-Sequence": "0"})
    assert wrong.value.err_code == 10071
    with pytest.raises(APIError) as other:  # a stream of another name has the subject
        await requests.js_publish("t.c", b"y", "NOT-T")
    assert other.value.err_code == 10060
    with pytest.raises(NoStreamResponseError):  # no stream has it
        await requests.js_publish("nostream.x", b"y", "T")


async def test_a_request_nobody_answers_times_out(nc: NATS) -> None:
    requests = Requests(nc)
    with pytest.raises(NoRespondersError):
        await requests.request("nobody.here", b"", 2.0)

    async def silent(msg: Msg) -> None:
        pass

    await nc.subscribe("silent", cb=silent)
    with pytest.raises(NatsTimeout):
        await requests.request("silent", b"", 0.2)
    assert requests.waiting == {}


async def test_pull_requests_keep_the_handlers_busy_within_their_concurrency(
    nc: NATS, tmp_path: Path
) -> None:
    """40 messages waiting, 8 handlers: each pull request asks for the free slots, a
    message that came holds one until its handler is done, and the next request goes
    out as soon as the last one brought what it asked for (not when it expires)."""
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    ctx = ServiceContext(cfg=Config.load(tmp_path, service="qmgr"), program="qmgr",
                         service="qmgr", nc=nc)
    js = nc.jetstream()
    for i in range(40):
        await js.publish("t.work", str(i).encode())
    running, most, done = 0, 0, asyncio.Event()
    seen: set[bytes] = set()

    async def handler(msg: Msg) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        await msg.ack()
        seen.add(msg.data)
        if len(seen) == 40:
            done.set()

    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(consume(ctx, stream="T", subject="t.work", durable="worker",
                                       handler=handler, concurrency=8, batch=8))
    try:
        await asyncio.wait_for(done.wait(), 20)
        # five requests of eight, each ended by its eighth message, not its expiry
        assert loop.time() - started < 4.0
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)
    assert seen == {str(i).encode() for i in range(40)}
    assert 1 <= most <= 8


async def test_each_message_is_handled_while_its_pull_request_is_open(
    nc: NATS, tmp_path: Path
) -> None:
    """A pull request for 8 messages: each is handled when it arrives (the next one is
    published only then), not when the request is full or has expired."""
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    ctx = ServiceContext(cfg=Config.load(tmp_path, service="qmgr"), program="qmgr",
                         service="qmgr", nc=nc)
    js = nc.jetstream()
    handled: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(msg: Msg) -> None:
        await msg.ack()
        await handled.put(msg.data)

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(consume(ctx, stream="T", subject="t.work", durable="worker",
                                       handler=handler, concurrency=8, batch=8))
    try:
        await js.publish("t.work", b"first")
        assert await asyncio.wait_for(handled.get(), 10) == b"first"
        started = loop.time()
        for i in range(20):
            await js.publish("t.work", str(i).encode())
            assert await asyncio.wait_for(handled.get(), 10) == str(i).encode()
        # a batch waiting for its request to fill or expire would take a second each
        assert loop.time() - started < 5.0
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)
    info = await js.consumer_info("T", "worker")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_keep_alive_holds_a_message_past_its_ack_wait(nc: NATS) -> None:
    """A job held longer than ack_wait under keep_alive is not handed out again: its
    beats (in_progress) reset JetStream's clock; once the block ends they stop."""
    js = nc.jetstream()
    sub = await js.pull_subscribe("t.long", "long", config=ConsumerConfig(ack_wait=1.0))
    await js.publish("t.long", b"job")
    msg = (await sub.fetch(1, timeout=5))[0]
    async with keep_alive(msg, 0.3):
        await asyncio.sleep(2.5)  # the delivery itself, longer than ack_wait
        with pytest.raises(NatsTimeout):  # not redelivered meanwhile
            await sub.fetch(1, timeout=0.5)
    info = await js.consumer_info("T", "long")
    assert info.num_redelivered == 0 and info.num_ack_pending == 1
    again = (await sub.fetch(1, timeout=5))[0]  # no beats any more: ack_wait runs out
    assert again.data == b"job" and again.metadata.num_delivered == 2
