"""The reply time limits of delivery-smtp's session (one lazy timer per session).

A real server on loopback answers each command after the delay the command
names (``WAIT 0.6``), or never (``MUTE``). The timer a short wait leaves
behind must not cut a later, longer wait short, and a short wait after a
long one must still time out on time; under asyncio's own loop and under
uvloop (whose clock counts milliseconds), as the service runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from delivery_smtp.addr import Target
from delivery_smtp.connect import open_socket
from delivery_smtp.session import Chat, TimedOut
from postbus.smtp.reply import Reply

pytestmark = pytest.mark.integration


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 slow.test ESMTP\r\n")
    try:
        while line := await reader.readline():
            verb, _, arg = line.strip().partition(b" ")
            if verb == b"MUTE":
                continue
            if verb == b"WAIT":
                await asyncio.sleep(float(arg))
            writer.write(b"250 2.0.0 " + line.strip() + b"\r\n")
    finally:
        writer.close()


def _run(
    body: Callable[[Chat], Awaitable[None]], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    async def main() -> None:
        answering: set[asyncio.Task[None]] = set()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            answering.add(task)
            await _answer(reader, writer)

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = Target("slow.test", "127.0.0.1", port)
        chat = await Chat.over_socket(target, await open_socket(target, 5))
        try:
            assert await chat.greeting(5) == Reply(220, "slow.test ESMTP")
            await body(chat)
        finally:
            chat.close()
            server.close()
            for task in answering:  # a server still sleeping on a WAIT
                task.cancel()
            await asyncio.gather(*answering, return_exceptions=True)
            await server.wait_closed()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


LOOPS = pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)


@LOOPS
def test_a_short_wait_does_not_cut_a_later_long_one(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def body(chat: Chat) -> None:
        assert await chat.command(b"NOOP", timeout=0.3) == Reply(250, "2.0.0 NOOP")
        # the timer set for the NOOP fires during this wait and follows it
        got = await chat.command(b"WAIT", b"0.8", timeout=10)
        assert got == Reply(250, "2.0.0 WAIT 0.8")
        assert not chat.broken

    _run(body, loop_factory)


@LOOPS
def test_a_short_wait_after_a_long_one_times_out_on_time(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def body(chat: Chat) -> None:
        assert await chat.command(b"NOOP", timeout=600) == Reply(250, "2.0.0 NOOP")
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await asyncio.wait_for(chat.command(b"MUTE", timeout=0.3), 10)
        took = time.monotonic() - started
        assert 0.29 <= took < 5, took  # the 600 s timer left pending was brought forward
        assert chat.broken

    _run(body, loop_factory)


@LOOPS
def test_every_wait_keeps_its_own_limit(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def body(chat: Chat) -> None:
        for _ in range(3):  # quick replies: the deadline moves, no wait is cut short
            assert await chat.command(b"WAIT", b"0.1", timeout=0.4) == Reply(
                250, "2.0.0 WAIT 0.1")
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await chat.command(b"WAIT", b"3", timeout=0.5)
        assert 0.49 <= time.monotonic() - started < 2.5

    _run(body, loop_factory)


@LOOPS
def test_a_wait_without_a_limit_outlives_the_timer_of_an_earlier_one(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def body(chat: Chat) -> None:
        assert await chat.command(b"NOOP", timeout=0.2) == Reply(250, "2.0.0 NOOP")
        got = await asyncio.wait_for(chat.command(b"WAIT", b"0.6", timeout=None), 10)
        assert got == Reply(250, "2.0.0 WAIT 0.6")
        assert not chat.broken

    _run(body, loop_factory)
