"""The JetStream pull-consumer loop every role shares, with its retry and poison policy.

A handler acks, naks or terms each message itself. When it raises instead,
the loop decides, by what was raised:

* :class:`~postbus.queue.entry.CodecError`: the payload can never be
  decoded, so retrying cannot help: the message is poison at once.
* a transient error (:data:`TRANSIENT`: the bus, Redis or a lookup table is away,
  a compare-and-set kept losing): the message is not at fault; it is
  handled again after a delay that doubles from 1s up to
  ``postbus_bus_retry_max_delay``, for as long as that takes.
* anything else: the same growing delay, but the ``postbus_bus_retry_limit``-th
  failing delivery is poison.

Poison is moved to the corrupt queue (:mod:`postbus.queue.corrupt`: one
record per message, one log line, one count), then the role's
``on_poison`` hook runs (say, to tell the qmgr about a job that will never
report), then the message is terminated, so it is never delivered again.
If the move itself fails, the message is nak'ed and the next delivery
tries again: nothing is dropped unrecorded.

JetStream: the consumer keeps ``max_deliver=-1``, because JetStream's own
limit would silently stop delivering a message and leave it in the stream
without a record; the count is ``msg.metadata.num_delivered``, which also
counts ack_wait expiries (a handler killed with its process). A nak'ed
message stays in the consumer's pending set until it is settled and holds
one of the ``max_ack_pending`` slots meanwhile; the bounded delay and the
bounded number of deliveries keep failing messages from holding them long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from postbus import metrics
from postbus.bus.jetstream import ensure_streams
from postbus.maps.table import TableRetry
from postbus.queue import corrupt
from postbus.queue.entry import CodecError
from postbus.queue.file import QueueConflict

if TYPE_CHECKING:
    from postbus.service import ServiceContext

log = logging.getLogger("postbus.bus")

Handler = Callable[[Msg], Awaitable[None]]
PoisonHook = Callable[[Msg], Awaitable[None]]

FIRST_DELAY = 1.0  # seconds before the second delivery; doubles each time

#: Failures that say nothing about the message: retried, never poison.
TRANSIENT: tuple[type[Exception], ...] = (
    TableRetry,
    QueueConflict,
    TimeoutError,  # nats.errors.TimeoutError is one
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
    ServiceUnavailableError,
    RedisConnectionError,  # Redis away: tables, the destination windows
    RedisTimeout,
)


def retry_delay(deliveries: int, longest: float) -> float:
    """Seconds to wait after the ``deliveries``-th failed delivery: 1, 2, 4, ... ``longest``."""
    return min(longest, FIRST_DELAY * 2 ** min(max(deliveries, 1) - 1, 30))


class RetryPolicy:
    """What becomes of a message whose handler raised (see the module docstring)."""

    def __init__(self, ctx: ServiceContext, durable: str, on_poison: PoisonHook | None) -> None:
        self.ctx = ctx
        self.durable = durable
        self.on_poison = on_poison

    async def failed(self, msg: Msg, exc: Exception) -> None:
        cfg = self.ctx.cfg
        deliveries = msg.metadata.num_delivered or 1
        limit = cfg.int("postbus_bus_retry_limit")
        if isinstance(exc, CodecError):
            await self.poison(msg, str(exc), deliveries)
        elif isinstance(exc, TRANSIENT) or deliveries < limit:
            await self.retry(msg, exc, deliveries, limit)
        else:
            reason = f"failed {deliveries} times: {type(exc).__name__}: {exc}"
            await self.poison(msg, reason, deliveries)

    async def retry(self, msg: Msg, exc: Exception, deliveries: int, limit: int) -> None:
        delay = retry_delay(deliveries, self.ctx.cfg.time("postbus_bus_retry_max_delay"))
        qid = corrupt.queue_id_of(msg, corrupt.kind_of(msg.subject))
        of = "" if isinstance(exc, TRANSIENT) else f" of {limit}"
        log.warning("%s%s: cannot handle %s (delivery %d%s): %s: %s; trying again in %gs",
                    f"{qid}: " if qid else "", self.durable, msg.subject, deliveries, of,
                    type(exc).__name__, exc, delay)
        with contextlib.suppress(Exception):
            await msg.nak(delay=delay)
        metrics.bus_messages_processed.labels(self.durable, "nak").inc()

    async def poison(self, msg: Msg, reason: str, deliveries: int) -> None:
        assert self.ctx.nc is not None
        try:
            await corrupt.quarantine(self.ctx.nc.jetstream(), msg, reason, deliveries)
        except Exception as exc:
            delay = retry_delay(deliveries, self.ctx.cfg.time("postbus_bus_retry_max_delay"))
            log.warning("%s: cannot move %s to the corrupt queue: %s; trying again in %gs",
                        self.durable, msg.subject, exc, delay)
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
            return
        if self.on_poison is not None:
            try:
                await self.on_poison(msg)
            except Exception as exc:
                log.warning("%s: after moving %s to the corrupt queue: %s",
                            self.durable, msg.subject, exc)
        with contextlib.suppress(Exception):
            await msg.term()
        metrics.bus_messages_processed.labels(self.durable, "corrupt").inc()


async def consume(
    ctx: ServiceContext,
    *,
    stream: str,
    subject: str,
    durable: str,
    handler: Handler,
    concurrency: int = 64,
    batch: int = 64,
    ack_wait: float | None = None,
    max_ack_pending: int | None = None,
    on_poison: PoisonHook | None = None,
    config: ConsumerConfig | None = None,
) -> None:
    """Pull work from a durable consumer until the service stops.

    Any number of replicas share one durable consumer, so work is split
    between them. ``handler`` acks, naks or terms each message itself; if it
    raises, :class:`RetryPolicy` retries it later or moves it to the
    corrupt queue, never drops it. In-flight handlers finish before this
    returns. ``config`` replaces the consumer's settings (a consumer that starts
    elsewhere than at the beginning of its stream); it is also what a consumer
    that went away is declared again with.
    """
    assert ctx.nc is not None
    js = ctx.nc.jetstream()
    wait = ack_wait if ack_wait is not None else ctx.cfg.time("postbus_ack_wait")
    config = config or ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=wait,
        max_deliver=-1,  # the retry policy decides, and records what it gives up on
        max_ack_pending=max_ack_pending or max(1000, concurrency * 4),
        filter_subject=subject,
    )

    async def subscribe() -> JetStreamContext.PullSubscription | None:
        while not ctx.stopping.is_set():
            try:
                return await js.pull_subscribe(subject, durable=durable, stream=stream,
                                               config=config)
            except Exception as exc:
                log.warning("cannot subscribe %s: %s; retrying", durable, exc)
                await asyncio.sleep(0.5)
        return None

    sub = await subscribe()
    if sub is None:
        return
    policy = RetryPolicy(ctx, durable, on_poison)
    failures = 0
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    ctx.ready = True

    async def handle(msg: Msg) -> None:
        try:
            if msg.metadata.num_delivered and msg.metadata.num_delivered > 1:
                metrics.bus_redeliveries.labels(durable).inc()
            await handler(msg)
        except Exception as exc:
            await policy.failed(msg, exc)
        finally:
            slots.release()

    while not ctx.stopping.is_set():
        await slots.acquire()
        free = 1
        while free < batch and not slots.locked():
            await slots.acquire()
            free += 1
        try:
            msgs = await sub.fetch(free, timeout=1.0)
            failures = 0
        except (NatsTimeout, TimeoutError):
            msgs = []
        except (ConnectionClosedError, Exception) as exc:
            msgs = []
            if not ctx.stopping.is_set():
                log.debug("%s: fetch failed: %s", durable, exc)
                await asyncio.sleep(0.2)
                failures += 1
                if failures % 5 == 0 and await _missing(js, stream, durable):
                    # a nats-server restart took the stream (memory) or consumer away
                    log.warning("warning: %s: consumer gone; declaring it again", durable)
                    await ensure_streams(js, ctx.cfg.int("postbus_stream_replicas"))
                    sub = await subscribe() or sub
        for _ in range(free - len(msgs)):
            slots.release()
        for msg in msgs:
            task = asyncio.create_task(handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def _missing(js: JetStreamContext, stream: str, durable: str) -> bool:
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        return True
    except Exception:
        return False  # the bus is away: nothing to declare yet
    return False


@contextlib.asynccontextmanager
async def keep_alive(msg: Msg, interval: float) -> AsyncIterator[None]:
    """Tell JetStream we are still working on ``msg`` (long deliveries).

    A timer, not a task: most deliveries end long before the first beat."""
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle | None = None
    beats: set[asyncio.Task[None]] = set()

    def beat() -> None:
        nonlocal handle
        task = loop.create_task(_in_progress(msg))
        beats.add(task)
        task.add_done_callback(beats.discard)
        handle = loop.call_later(interval, beat)

    handle = loop.call_later(interval, beat)
    try:
        yield
    finally:
        handle.cancel()


async def _in_progress(msg: Msg) -> None:
    with contextlib.suppress(Exception):
        await msg.in_progress()
