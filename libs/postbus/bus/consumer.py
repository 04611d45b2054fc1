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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from postbus import metrics
from postbus.bus.ack_subject import deliveries
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
PULL_EXPIRES = 1.0  # seconds a pull request waits on the server for messages

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
    if not config.filter_subjects:  # as nats.py's pull_subscribe declares it
        config.filter_subject = subject
    config.name = config.durable_name = durable

    async def declare() -> bool:
        """Bind to the durable consumer, creating it when it is missing."""
        while not ctx.stopping.is_set():
            try:
                try:
                    info = await js.consumer_info(stream, durable)
                except NotFoundError:
                    await js.add_consumer(stream, config=config)
                    return True
                if not config.filter_subjects and (
                        info.config.filter_subject != config.filter_subject):
                    log.info("consumer %s: filter %s -> %s", durable,
                             info.config.filter_subject, config.filter_subject)
                    await js.add_consumer(stream, config=config)  # an older release's
                return True
            except Exception as exc:
                log.warning("cannot subscribe %s: %s; retrying", durable, exc)
                await asyncio.sleep(0.5)
        return False

    if not await declare():
        return
    policy = RetryPolicy(ctx, durable, on_poison)
    failures = 0
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg, slot: bool) -> None:
        try:
            if deliveries(msg) > 1:
                metrics.bus_redeliveries.labels(durable).inc()
            await handler(msg)
        except Exception as exc:
            await policy.failed(msg, exc)
        finally:
            if slot:
                slots.release()

    def start(msg: Msg, slot: bool) -> None:
        task = asyncio.create_task(handle(msg, slot))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    puller = _Puller(ctx.nc, stream, durable, start)
    await puller.open()
    ctx.ready = True
    try:
        while not ctx.stopping.is_set():
            await slots.acquire()
            free = 1
            while free < batch and not slots.locked():
                await slots.acquire()
                free += 1
            try:
                taken, trouble = await puller.pull(free, PULL_EXPIRES)
            except Exception as exc:  # closed, reconnecting, a full reconnect buffer
                taken, trouble = 0, str(exc) or type(exc).__name__
            for _ in range(free - taken):
                slots.release()
            if not trouble:
                failures = 0
            elif not ctx.stopping.is_set():
                log.debug("%s: fetch failed: %s", durable, trouble)
                await asyncio.sleep(0.2)
                failures += 1
                if failures % 5 == 0 and await _missing(js, stream, durable):
                    # a nats-server restart took the stream (memory) or consumer away
                    log.warning("warning: %s: consumer gone; declaring it again", durable)
                    await ensure_streams(js, ctx.cfg.int("postbus_stream_replicas"))
                    await declare()
    finally:
        await puller.close()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


class _Puller:
    """Pull requests of one durable consumer, each message handed on as it arrives.

    nats.py's ``fetch`` spends a task, a timer (``wait_for``) and a UUID on
    every message it hands back, and a second request when the first found
    nothing. Here one request is out at a time, for as many messages as there
    are free handler slots; every message starts its handler at once
    (``start(msg, slot)``;
    ``slot``: the current request asked for it, so it holds one of its slots).
    Messages come on their own subjects, a request's statuses on its reply
    subject. A request ends when it brought all it asked for, or JetStream
    ends it with a status (408: it expired; 409: the consumer went away or
    changed leader), or it is lost (a reconnect): then it is given up after
    its expiry and a second more.
    """

    def __init__(self, nc: NATS, stream: str, durable: str,
                 start: Callable[[Msg, bool], None]) -> None:
        self.nc = nc
        self.api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.inbox = nc.new_inbox()
        self.start = start
        self.sub: Subscription | None = None
        self.seq = 0
        self.current = ""  # the reply subject of the request out, if any
        self.wanted = 0  # messages the current request may still bring
        self.ended = asyncio.Event()
        self.trouble = ""

    async def open(self) -> None:
        self.sub = await self.nc.subscribe(self.inbox + ".*", cb=self._arrived)

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()

    async def pull(self, count: int, expires: float) -> tuple[int, str]:
        """Ask for up to ``count`` messages; returns how many came (each holding a
        slot) and what went wrong, if anything ('' when nothing did)."""
        self.seq += 1
        self.current = f"{self.inbox}.{self.seq}"
        self.wanted, self.trouble = count, ""
        self.ended.clear()
        request = orjson.dumps({"batch": count, "expires": int(expires * 1e9)})
        try:
            await self.nc.publish(self.api, request, reply=self.current)
            try:
                await asyncio.wait_for(self.ended.wait(), expires + 1.0)
            except TimeoutError:
                self.trouble = "no answer to a pull request"
        finally:
            self.current = ""
        return count - self.wanted, self.trouble

    async def _arrived(self, msg: Msg) -> None:
        headers = msg.headers
        status = None if msg.reply or not headers else headers.get("Status")
        if status is None or headers is None:  # a message of the stream (its own subject)
            slot = bool(self.current) and self.wanted > 0
            if slot:
                self.wanted -= 1
                if self.wanted == 0:
                    self.ended.set()
            self.start(msg, slot)
        elif msg.subject == self.current and status != "100":  # not an idle heartbeat
            if status not in ("404", "408"):  # 409: the consumer went away, or its leader
                self.trouble = f"{status} {headers.get('Description', '')}".strip()
            self.ended.set()


async def _missing(js: JetStreamContext, stream: str, durable: str) -> bool:
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        return True
    except Exception:
        return False  # the bus is away: nothing to declare yet
    return False


def keep_alive(msg: Msg, interval: float) -> _KeepAlive:
    """Tell JetStream we are still working on ``msg`` (long deliveries).

    A timer, not a task: most deliveries end long before the first beat. A class,
    not an asynccontextmanager: that costs a generator and its steps on every job."""
    return _KeepAlive(msg, interval)


class _KeepAlive:
    def __init__(self, msg: Msg, interval: float) -> None:
        self.msg = msg
        self.interval = interval
        self.handle: asyncio.TimerHandle | None = None
        self.beats: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> None:
        self.handle = asyncio.get_running_loop().call_later(self.interval, self._beat)

    async def __aexit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(_in_progress(self.msg))
        self.beats.add(task)
        task.add_done_callback(self.beats.discard)
        self.handle = loop.call_later(self.interval, self._beat)


async def _in_progress(msg: Msg) -> None:
    with contextlib.suppress(Exception):
        await msg.in_progress()
