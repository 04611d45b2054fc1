"""Which deferred mail postqueue -s selects, the command protocol's codec, and
the bounded fan-out that postsuper ALL and flushes use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from postbus.queue import admin
from postbus.queue import commands as cmd
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.listing import Taken


def entry(*rcpts: Recipient) -> QueueEntry:
    return QueueEntry("ABCDEF12345", "a@client.test", list(rcpts), queue="deferred")


@pytest.mark.parametrize(("site", "want"), [
    ("example.com", "example.com"),
    ("Example.COM.", "example.com"),
    ("[10.0.0.1]", "10.0.0.1"),
    ("[10.0.0.1]:2525", "10.0.0.1"),
    ("mx.example.com:25", "mx.example.com"),
])
def test_bare_site(site: str, want: str) -> None:
    assert cmd.bare_site(site) == want


def test_for_site_matches_a_deferred_recipients_domain_or_next_hop() -> None:
    deferred = Recipient("u@Later.Example", state="deferred", transport="relay:[10.0.0.1]:2525")
    sent = Recipient("v@sent.example", state="sent", transport="smtp:sent.example")
    message = entry(deferred, sent)
    assert cmd.for_site(message, "later.example")
    assert cmd.for_site(message, "[10.0.0.1]")
    assert cmd.for_site(message, "10.0.0.1")
    assert not cmd.for_site(message, "sent.example")  # delivered already: nothing to flush
    assert not cmd.for_site(message, "example")  # a domain, not a suffix


def test_request_codec() -> None:
    assert cmd.decode_request(b'{"queue_id": "ABCDEF12345"}') == {"queue_id": "ABCDEF12345"}
    assert cmd.decode_request(b"") == {}
    with pytest.raises(ValueError):
        cmd.decode_request(b'{"queue_id": 7}')
    with pytest.raises(ValueError):
        cmd.decode_request(b"[1]")
    assert cmd.encode_reply(cmd.DENY) == b'{"status":"deny"}'


def test_taken_is_between_the_ack_floor_and_the_last_delivered() -> None:
    now = Taken(ack_floor=10, delivered=20)
    assert [seq for seq in (9, 10, 11, 20, 21) if now.active(seq)] == [11, 20]
    assert not Taken().active(1)


async def test_each_runs_everything_with_a_bound() -> None:
    running = peak = 0
    done: list[int] = []

    async def items() -> AsyncIterator[int]:
        for i in range(200):
            yield i

    async def work(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        done.append(i)
        running -= 1

    await admin.each(items(), work, parallel=8)
    assert sorted(done) == list(range(200)) and peak == 8


async def test_each_stops_at_the_first_failure() -> None:
    async def items() -> AsyncIterator[int]:
        for i in range(100):
            yield i

    async def work(i: int) -> None:
        if i == 3:
            raise RuntimeError("bus gone")
        await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="bus gone"):
        await admin.each(items(), work, parallel=4)
