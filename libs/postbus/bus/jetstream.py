"""Connecting to NATS and declaring the streams the queue lives in.

Streams are declared from one list, idempotently, by whichever service
starts first; every service calls :func:`ensure_streams` at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from postbus.bus import subjects as s
from postbus.events import stream_spec as events_stream_spec

log = logging.getLogger("postbus.bus")

DUPLICATE_WINDOW = 120.0  # seconds JetStream remembers a Nats-Msg-Id
CORRUPT_MAX_AGE = 30 * 86400.0  # corrupt records older than 30 days are dropped
CORRUPT_MAX_BYTES = 1024 * 1024 * 1024
CORRUPT_MAX_MSGS = 100_000


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    max_age: float = 0.0  # seconds, 0 = forever
    storage: StorageType = StorageType.FILE
    max_bytes: int = -1
    per_subject: int = -1  # messages kept per subject (1: only the latest entry)
    max_msgs: int = -1


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(s.QUEUE_STREAM, (s.QUEUE_SUBJECTS,), RetentionPolicy.LIMITS, per_subject=1),
    StreamSpec(s.DELIVER_STREAM, (f"{s.ROOT}.deliver.*",), RetentionPolicy.WORK_QUEUE),
    StreamSpec(s.STATUS_STREAM, (f"{s.ROOT}.status.*",), RetentionPolicy.WORK_QUEUE),
    StreamSpec(s.DEFER_STREAM, (f"{s.ROOT}.defer.*",), RetentionPolicy.WORK_QUEUE),
    events_stream_spec(),  # default limits; postbus.events.ensure_stream applies main.cf's
    # The corrupt queue waits for an administrator (postsuper -d), but a flood
    # of bad input must not fill the disk: the oldest records go first.
    StreamSpec(
        s.CORRUPT_STREAM, (s.CORRUPT_SUBJECTS,), RetentionPolicy.LIMITS, CORRUPT_MAX_AGE,
        max_bytes=CORRUPT_MAX_BYTES, max_msgs=CORRUPT_MAX_MSGS,
    ),
)


async def connect(
    url: str,
    name: str,
    *,
    connect_timeout: float = 2.0,
    closing: Callable[[], bool] = lambda: False,
) -> NATS:
    """Connect with endless reconnects: a NATS restart must not kill a service."""

    async def on_disconnect() -> None:
        if not closing():
            log.warning("warning: disconnected from NATS at %s", url)

    async def on_reconnect() -> None:
        log.info("reconnected to NATS at %s", url)

    async def on_error(exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)

    return await nats.connect(
        url,
        name=name,
        connect_timeout=connect_timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        pending_size=64 * 1024 * 1024,
    )


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create (or leave alone) every stream."""
    for spec in STREAMS:
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=spec.retention,
            storage=spec.storage,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW,
            max_age=spec.max_age,
            max_bytes=spec.max_bytes,
            max_msgs_per_subject=spec.per_subject,
            max_msgs=spec.max_msgs,
            discard=DiscardPolicy.OLD,
            allow_direct=True,
        )
        await _add_or_update(js, config)


async def _add_or_update(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    for _ in range(20):
        try:
            await js.stream_info(config.name)
            return
        except NotFoundError:
            pass
        try:
            await js.add_stream(config)
            return
        except BadRequestError as exc:  # a concurrent creator won the race
            log.debug("add_stream %s: %s", config.name, exc)
            await asyncio.sleep(0.05)
    raise RuntimeError(f"cannot declare stream {config.name}")
