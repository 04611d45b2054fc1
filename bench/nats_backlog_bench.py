"""nats-server CPU per queue-file operation of a new message, on an empty queue
and then beside a backlog of deferred messages (issue 9: what the backlog costs
nats-server itself, without the roles' noise).

A private nats-server with Postbus's streams (ensure_streams) and the real
QueueFile: each round queues N new 5 KiB messages, takes them from a consumer
on the triggers (as qmgr-incoming), naks them with a delay (the attempt's
lease), reads their entries, removes them (the purge) and acks. Four rounds
on an empty queue, then B deferred messages are added as a dead site leaves
them (1 KiB queue file, a written deferred entry and, unless ``--no-timers``,
a timer three hours out), then four rounds again.

    python bench/nats_backlog_bench.py [-n N] [-b B] [--no-timers]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from postbus.bus import subjects as s
from postbus.bus.jetstream import connect, ensure_streams
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.file import QueueFile
from postbus.servers import nats_server

BODY = b"x" * 5200
STEP = 200  # operations in flight at once
OPS = ("enqueue", "fetch", "nak", "get", "purge", "ack")


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_entry(i: int) -> QueueEntry:
    return QueueEntry(queue_id="", sender="load@bench.test",
                      recipients=[Recipient(address=f"r{i}@sink.test")])


async def in_steps(n: int, op: Callable[[int], Awaitable[Any]]) -> list[Any]:
    done: list[Any] = []
    for start in range(0, n, STEP):
        done += await asyncio.gather(*(op(i) for i in range(start, min(n, start + STEP))))
    return done


async def round_(queue: QueueFile, sub: JetStreamContext.PullSubscription, nc: NATS,
                 pid: int, n: int) -> dict[str, float]:
    """ms of nats-server CPU per message, per operation."""
    spent: dict[str, float] = {}
    mark = cpu(pid)

    def lap(name: str) -> None:
        nonlocal mark
        now = cpu(pid)
        spent[name] = (now - mark) * 1000 / n
        mark = now

    qids = [str(q) for q in await in_steps(n, lambda i: queue.enqueue(new_entry(i), BODY))]
    lap("enqueue")
    msgs: list[Msg] = []
    while len(msgs) < n:
        msgs += await sub.fetch(min(500, n - len(msgs)), timeout=5)
    lap("fetch")
    for msg in msgs:
        await msg.nak(delay=60)
    await nc.flush()
    lap("nak")
    await in_steps(n, lambda i: queue.get(qids[i]))
    lap("get")
    await in_steps(n, lambda i: queue.remove(qids[i]))
    lap("purge")
    for msg in msgs:
        await nc.publish(msg.reply or "", b"+ACK")
    await nc.flush()
    await asyncio.sleep(0.5)
    lap("ack")
    return spent


async def add_backlog(queue: QueueFile, sub: JetStreamContext.PullSubscription, nc: NATS,
                      count: int, timers: bool) -> None:
    when = time.time() + 3 * 3600

    async def one(i: int) -> None:
        entry = new_entry(i)
        qid = await queue.enqueue(entry, BODY[:1024])
        entry.queue, entry.next_attempt = "deferred", when
        await queue.update(entry, 0)
        if timers:
            await queue.set_timer(qid, when, "s0")

    await in_steps(count, one)
    taken = 0
    while taken < count:  # their triggers, acknowledged as the qmgr does at the deferral
        for msg in await sub.fetch(min(500, count - taken), timeout=5):
            await nc.publish(msg.reply or "", b"+ACK")
            taken += 1
    await nc.flush()


def show(label: str, rounds: list[dict[str, float]]) -> None:
    median = {op: statistics.median(r[op] for r in rounds) for op in OPS}
    totals = [sum(r.values()) for r in rounds]
    print(f"{label}: nats-server ms/msg " + ", ".join(f"{op} {median[op]:.3f}" for op in OPS)
          + f"; total median {statistics.median(totals):.3f} "
          f"(rounds {', '.join(f'{t:.3f}' for t in totals)})", flush=True)


async def run(url: str, pid: int, args: argparse.Namespace) -> None:
    nc = await connect(url, "bench")
    js = nc.jetstream()
    await ensure_streams(js)
    queue = QueueFile(nc, js)
    sub = await js.pull_subscribe(
        s.MSG_TRIGGER_FILTER, durable=s.QMGR_INCOMING_CONSUMER, stream=s.QUEUE_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=60,
                              max_ack_pending=max(20_000, args.n * 2)))
    await round_(queue, sub, nc, pid, args.n)  # warm-up
    show("empty queue", [await round_(queue, sub, nc, pid, args.n) for _ in range(4)])
    t0 = time.monotonic()
    await add_backlog(queue, sub, nc, args.backlog, not args.no_timers)
    what = f"{args.backlog} deferred{' without timers' if args.no_timers else ''}"
    print(f"backlog: {what} written in {time.monotonic() - t0:.0f} s", flush=True)
    show(what, [await round_(queue, sub, nc, pid, args.n) for _ in range(4)])
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="new messages per round")
    parser.add_argument("-b", "--backlog", type=int, default=50_000)
    parser.add_argument("--no-timers", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postbus-natsbacklog-") as tmp:
        server = nats_server(Path(tmp)).start()
        try:
            assert server.proc is not None
            asyncio.run(run(server.url, server.proc.pid, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
