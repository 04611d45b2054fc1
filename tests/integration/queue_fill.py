"""Queue files published straight into POSTBUS_QUEUE, fast (tests and bench/queue_bench.py).

A message queued by ingress is one JetStream message: chunk 0 of its content
on ``postbus.q.<qid>.msg`` with its entry in the ``Postbus-Entry`` header.
These helpers publish that message directly, in pipelined batches (each
batch ends with one acknowledged publish, so all of it is stored before the
next begins), which queues 100,000 small messages in a second or two on a
nats-server without fsync.
"""

from __future__ import annotations

import time

from nats.aio.client import Client as NATS

from postbus.bus import subjects as s
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.file import ENTRY_HEADER
from postbus.servers import ServerProcess

BODY = b"Subject: queued\r\n\r\nbody\r\n"
BATCH = 5000


def queue_id(index: int, prefix: str = "B") -> str:
    """A distinct short-form-looking queue ID (hex, 11 characters)."""
    return f"{prefix}{index:010X}"


async def fill(nc: NATS, count: int, *, prefix: str = "B", recipient: str = "x@remote.test",
               sender: str = "a@client.test") -> list[str]:
    """Queue ``count`` tiny messages as received (incoming); their IDs."""
    js = nc.jetstream()
    template = QueueEntry("QUEUEID", sender, [Recipient(recipient)], size=len(BODY))
    raw = template.encode().decode()
    ids = [queue_id(i, prefix) for i in range(count)]
    bucket = s.time_bucket(time.time())
    for start in range(0, count, BATCH):
        batch = ids[start:start + BATCH]
        for qid in batch[:-1]:
            await nc.publish(s.msg_subject(qid, bucket), BODY,
                             headers={ENTRY_HEADER: raw.replace("QUEUEID", qid, 1)})
        last = batch[-1]
        await js.publish(s.msg_subject(last, bucket), BODY, stream=s.QUEUE_STREAM,
                         headers={ENTRY_HEADER: raw.replace("QUEUEID", last, 1)})
    return ids


def nats_without_fsync(server: ServerProcess) -> ServerProcess:
    """A nats_server() whose JetStream syncs as nats-server does by default
    (the queue's contents, not its durability, are what these tests check)."""
    conf = server.files["nats-server.conf"]
    server.files["nats-server.conf"] = conf.replace("  sync_interval: always\n", "")
    return server
