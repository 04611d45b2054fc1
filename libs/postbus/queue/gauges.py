"""How many messages each queue holds, without reading the queue (≈ what showq
counts, for the postbus_queue_messages gauge).

Each figure comes from where it is kept anyway, so no replica has to scan:

* ``incoming``: new-mail triggers no qmgr has taken yet (the qmgr-incoming
  consumer's pending count);
* ``active``: attempts under way, each holding its trigger or wake-up open
  (the ack-pending counts of qmgr-incoming and qmgr-wake);
* ``deferred`` and ``hold``: shared counters in the memory stream
  ``POSTBUS_GAUGES``, moved with ``Nats-Incr`` by whoever writes an entry
  that changes queue (:meth:`postbus.queue.file.QueueFile.update`; postsuper
  when it deletes): every qmgr replica and postsuper move the same counters;
* ``corrupt``: the corrupt stream's subject count (one per corrupt message).

A counter can drift: a writer killed between its entry write and the
increment, a lost increment. So once an hour one qmgr replica recounts the
written entries and corrects the counters by the difference (:func:`recount`;
which replica is settled by JetStream's duplicate detection on a claim).
Counters that are missing (a new or restarted memory stream) are recounted
at once. A recount under load is as exact as a showq listing taken at the
same time: a change made just as it finishes may be missed or counted
twice, until the next recount.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from postbus.bus import subjects as s

log = logging.getLogger("postbus.gauges")

COUNTED = ("deferred", "hold")
RECOUNT_INTERVAL = 3600.0  # seconds between recounts (one replica each time)
CLAIMS = "recounts"  # the counter whose increments claim a recount
CLAIM_WINDOW = 2 * RECOUNT_INTERVAL  # JetStream remembers a claim this long
TIMEOUT = 2.0


async def move(js: JetStreamContext, old: str | None, new: str | None) -> None:
    """One message left queue ``old`` for ``new`` (None: it came or went).
    Never raises: a lost increment is drift, which the next recount corrects."""
    if old == new:
        return
    for name, step in ((old, "-1"), (new, "+1")):
        if name in COUNTED:
            await _incr(js, name, step)


async def _incr(js: JetStreamContext, name: str, step: str, key: str = "") -> bool | None:
    """Add ``step`` to counter ``name``; True: done, False: a duplicate claim,
    None: it failed."""
    headers = {"Nats-Incr": step}
    if key:
        headers["Nats-Msg-Id"] = key
    try:
        # (no stream=: a counter takes no Nats-Expected-* header)
        ack = await js.publish(s.gauge_subject(name), b"", headers=headers, timeout=TIMEOUT)
    except Exception as exc:  # a gauge must never fail a queue change
        log.debug("counter %s not moved by %s: %s", name, step, exc)
        return None
    return not ack.duplicate


async def counter(js: JetStreamContext, name: str) -> int | None:
    """A counter's value; None when it was never set (or the stream is new)."""
    try:
        msg = await js.get_last_msg(s.GAUGES_STREAM, s.gauge_subject(name), direct=True)
        return int(orjson.loads(msg.data or b"{}")["val"])
    except (NotFoundError, KeyError, ValueError, TypeError):
        return None


async def _consumer(js: JetStreamContext, name: str) -> tuple[int, int]:
    """(pending, ack pending) of one qmgr consumer; zeros when it is gone."""
    try:
        info = await js.consumer_info(s.QUEUE_STREAM, name)
    except NotFoundError:
        return 0, 0
    return info.num_pending or 0, info.num_ack_pending or 0


async def _subjects(nc: NATS, stream: str) -> int:
    """How many subjects a stream holds (STREAM.INFO's num_subjects, no list)."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=TIMEOUT)
    state = orjson.loads(reply.data).get("state", {})
    return int(state.get("num_subjects", 0))


async def counts(nc: NATS, js: JetStreamContext) -> tuple[dict[str, int], bool]:
    """Every queue's size, and whether a counter is missing (recount needed)."""
    pending, taken = await _consumer(js, s.QMGR_INCOMING_CONSUMER)
    _, waking = await _consumer(js, s.QMGR_WAKE_CONSUMER)
    sizes = {"incoming": pending, "active": taken + waking}
    missing = False
    for name in COUNTED:
        value = await counter(js, name)
        missing = missing or value is None
        sizes[name] = max(0, value or 0)
    sizes["corrupt"] = await _subjects(nc, s.CORRUPT_STREAM)
    return sizes, missing


async def claim(js: JetStreamContext, key: str) -> bool:
    """True for the one caller that claims recount ``key`` (the others see a
    duplicate within CLAIM_WINDOW)."""
    return bool(await _incr(js, CLAIMS, "+1", key=f"recount-{key}"))


def slot(now: float | None = None) -> str:
    """The recount claim of the current hour."""
    return str(int((time.time() if now is None else now) // RECOUNT_INTERVAL))


async def recount(js: JetStreamContext) -> dict[str, int]:
    """Count the written entries and bring the counters to what was counted.

    The listing follows the stream to its end, so an entry rewritten while it
    reads is counted in its new queue, as the counters count it: the
    correction is the count less the counters read right after."""
    from postbus.queue.listing import listing  # listing reads the queue file layout

    found: Counter[str] = Counter()
    async for entry, _ in listing(js, received=False):
        found[entry.queue] += 1
    for name in COUNTED:
        step = found[name] - (await counter(js, name) or 0)
        await _incr(js, name, f"{step:+d}")
    log.info("recounted the queue: %s", ", ".join(f"{n} {found[n]}" for n in COUNTED))
    return {name: found[name] for name in COUNTED}
