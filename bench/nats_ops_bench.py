"""nats-server CPU per JetStream operation of a message's path, on a private
nats-server configured as Postbus runs it (file store, fsync before every
acknowledgement): a 5 KiB fsynced publish (the queue file), the same on an
async-persisted stream (events), the purge that removes a message, and a
consumer's ack, nak with delay (an attempt's lease) and ack; and, for the
design notes (docs/queue.md), a removal that writes nothing: messages that
expire by their own ``Nats-TTL`` (nats-server's CPU while they expire, less
what it spends idle in as long); and a removal of many messages at once:
messages grouped under one subject prefix (a bucket) and purged by it, one
tombstone flush for the whole bucket.
Run: .venv/bin/python bench/nats_ops_bench.py [-n N]"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, PersistMode, StreamConfig

from postbus.bus.jetstream import connect
from postbus.servers import nats_server

BODY = b"x" * 5200
TTL = 2  # seconds the expiring messages live
BUCKET = 100  # messages purged together by one filter


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(url: str, pid: int, n: int) -> None:
    nc = await connect(url, "bench")
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="Q", subjects=["q.>"], max_msgs_per_subject=1,
                                     allow_msg_ttl=True))
    await js.add_stream(StreamConfig(name="E", subjects=["e.>"],
                                     persist_mode=PersistMode.ASYNC))
    marks = [cpu(pid)]
    for i in range(n):
        await js.publish(f"q.{i}.msg", BODY)
    marks.append(cpu(pid))
    for _ in range(n):
        await js.publish("e.x", BODY[:300])
    marks.append(cpu(pid))
    sub = await js.pull_subscribe("q.>", durable="d", stream="Q", config=ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_ack_pending=n * 2))
    msgs = []
    while len(msgs) < n:
        msgs += await sub.fetch(500, timeout=5)
    marks.append(cpu(pid))
    for msg in msgs[: n // 2]:
        await nc.publish(msg.reply or "", b"+ACK")
    await nc.flush()
    marks.append(cpu(pid))
    for msg in msgs[n // 2:]:
        await msg.nak(delay=60)
        await nc.publish(msg.reply or "", b"+ACK")
    await nc.flush()
    marks.append(cpu(pid))
    for i in range(n):
        await js.purge_stream("Q", subject=f"q.{i}.>")
    marks.append(cpu(pid))
    expiry = await expiring(js, pid, n)
    grouped = await bucket_purge(js, pid, n)
    await nc.close()
    per = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
    print(f"nats-server CPU per operation, ms: fsynced publish 5 KiB {per[0] / n:.3f}; "
          f"async-persisted publish {per[1] / n:.3f}; ack {per[3] / (n // 2):.3f}; "
          f"nak with delay + ack {per[4] / (n - n // 2):.3f}; purge {per[5] / n:.3f}; "
          f"expiry by Nats-TTL {expiry:.3f}; "
          f"purge by a bucket of {BUCKET} {grouped:.3f} (per message)")


async def bucket_purge(js: JetStreamContext, pid: int, n: int) -> float:
    """nats-server's CPU per message when ``BUCKET`` messages share a subject
    prefix and one purge filtered on it removes them all."""
    buckets = max(1, n // BUCKET)
    for i in range(buckets * BUCKET):
        await js.publish(f"q.b{i // BUCKET}.{i}.msg", BODY)
    start = cpu(pid)
    for b in range(buckets):
        await js.purge_stream("Q", subject=f"q.b{b}.>")
    return (cpu(pid) - start) * 1000 / (buckets * BUCKET)


async def expiring(js: JetStreamContext, pid: int, n: int) -> float:
    """nats-server's CPU per message for ``n`` messages expiring by their TTL
    (no tombstone, so no fsync), less its idle CPU over as long."""
    for i in range(n):
        await js.publish(f"q.t{i}.msg", BODY, headers={"Nats-TTL": f"{TTL}s"})
    start, began = cpu(pid), time.monotonic()
    while (await js.stream_info("Q")).state.messages > 0:
        await asyncio.sleep(0.2)
    spent, took = cpu(pid) - start, time.monotonic() - began
    idle = cpu(pid)
    await asyncio.sleep(took)
    idle = cpu(pid) - idle
    return max(0.0, spent - idle) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = nats_server(Path(tmp)).start()
        try:
            assert server.proc is not None
            asyncio.run(run(server.url, server.proc.pid, args.n))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
