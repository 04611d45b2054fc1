"""Connecting to NATS and declaring the streams the queue lives in.

Streams are declared from one list, idempotently, by whichever service
starts first; every service calls :func:`ensure_streams` at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    PersistMode,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError

from postbus.bus import subjects as s
from postbus.config.conv import ConfigError
from postbus.events import stream_spec as events_stream_spec
from postbus.queue import gauges

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
    discard: DiscardPolicy = DiscardPolicy.OLD
    schedules: bool = False  # message schedules and per-message TTLs (timers)
    replaceable: bool = False  # holds no mail: may be made anew when it cannot be updated
    counters: bool = False  # Nats-Incr counters only (nats-server 2.12+)
    atomic: bool = False  # atomic batch publish (nats-server 2.12+): marks written in groups
    duplicate_window: float = DUPLICATE_WINDOW
    #: Acknowledged before it is on disk (nats-server's ``persist_mode: async``,
    #: single-replica streams only): for what observes the queue, never for mail.
    persist_async: bool = False


WORK_MAX_BYTES = 512 * 1024 * 1024  # jobs and results in flight; past this, publishing waits

STREAMS: tuple[StreamSpec, ...] = (
    # The queue file: what was accepted stays until it is delivered, bounced or deleted.
    StreamSpec(s.QUEUE_STREAM, (s.QUEUE_SUBJECTS, s.WAKE_SUBJECTS), RetentionPolicy.LIMITS,
               per_subject=1, schedules=True, atomic=True),
    # Work in flight: lost with a nats-server restart, and then redone (see subjects).
    StreamSpec(s.WORK_STREAM, (s.DELIVER_SUBJECTS, s.WAIT_SUBJECTS, s.STATUS_SUBJECTS),
               RetentionPolicy.WORK_QUEUE, storage=StorageType.MEMORY,
               max_bytes=WORK_MAX_BYTES, discard=DiscardPolicy.NEW, replaceable=True),
    events_stream_spec(),  # default limits; postbus.events.ensure_stream applies main.cf's
    # Queue sizes kept as counters (postbus.queue.gauges): recounted when lost.
    StreamSpec(s.GAUGES_STREAM, (s.GAUGE_SUBJECTS,), RetentionPolicy.LIMITS,
               storage=StorageType.MEMORY, per_subject=1, replaceable=True, counters=True,
               duplicate_window=gauges.CLAIM_WINDOW),
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
    """Create every stream, or bring an existing one to this release's settings.

    Settings JetStream can change in place (subjects, limits, replicas,
    schedules) are updated; one it cannot (the storage type) stops the
    service with the stream's name, rather than running on a stream that
    does not keep mail the way this code assumes. Streams of older
    releases are removed once they are empty.
    """
    for spec in STREAMS:
        await _add_or_update(js, _config(spec, replicas), spec.replaceable)
    for name in s.RETIRED_STREAMS:
        await _retire(js, name)


def _config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=spec.retention,
        storage=spec.storage,
        num_replicas=replicas,
        duplicate_window=spec.duplicate_window,
        max_age=spec.max_age,
        max_bytes=spec.max_bytes,
        max_msgs_per_subject=spec.per_subject,
        max_msgs=spec.max_msgs,
        discard=spec.discard,
        allow_direct=True,
        allow_msg_schedules=spec.schedules or None,
        allow_msg_ttl=spec.schedules or None,
        allow_msg_counter=spec.counters or None,
        allow_atomic=spec.atomic or None,
        persist_mode=_persist_mode(spec, replicas),
    )


def _persist_mode(spec: StreamSpec, replicas: int) -> PersistMode | None:
    """Async only where asked and possible (JetStream refuses it beyond one
    replica); the default is left unset, as JetStream itself leaves it."""
    return PersistMode.ASYNC if spec.persist_async and replicas == 1 else None


#: What ensure_streams reconciles on an existing stream.
_RECONCILED = ("subjects", "num_replicas", "max_age", "max_bytes", "max_msgs_per_subject",
               "max_msgs", "discard", "allow_direct", "allow_msg_schedules", "allow_msg_ttl",
               "duplicate_window", "allow_atomic")


async def _add_or_update(
    js: JetStreamContext, config: StreamConfig, replaceable: bool = False
) -> None:
    assert config.name is not None
    last: BadRequestError | None = None
    for _ in range(20):
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                return
            except BadRequestError as exc:  # a concurrent creator won the race, or refused
                log.debug("add_stream %s: %s", config.name, exc)
                last = exc
                await asyncio.sleep(0.05)
                continue
        have = info.config
        fixed = (have.storage != config.storage or have.retention != config.retention
                 or bool(have.allow_msg_counter) != bool(config.allow_msg_counter)
                 or _async_replicated(have, config))
        if fixed and replaceable:
            log.info("making stream %s anew with this release's storage", config.name)
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(config.name)
            continue
        if fixed:
            raise StreamMismatch(
                f"stream {config.name} exists with storage {_word(have.storage)} and "
                f"retention {_word(have.retention)}; this release needs "
                f"{_word(config.storage)} and {_word(config.retention)}: drain the queue "
                f"and remove the stream "
                f"(nats stream rm {config.name}) before starting"
            )
        _keep_persist_mode(have, config)
        changed = [k for k in _RECONCILED if _differs(getattr(have, k), getattr(config, k))]
        if changed:
            log.info("updating stream %s: %s", config.name, ", ".join(
                f"{k} {_word(getattr(have, k))} -> {_word(getattr(config, k))}"
                for k in changed))
            try:
                await js.update_stream(config)
            except APIError as exc:  # e.g. 3 replicas on a single nats-server
                raise StreamMismatch(
                    f"stream {config.name} cannot be given this release's settings "
                    f"({', '.join(changed)}): JetStream says: {exc.description}",
                    parameter="postbus_stream_replicas" if "num_replicas" in changed else None,
                ) from exc
        return
    raise StreamMismatch(
        f"cannot create stream {config.name}: JetStream says: "
        f"{last.description if last else 'it keeps changing'}",
        parameter="postbus_stream_replicas" if config.num_replicas != 1 else None,
    )


def _async_replicated(have: StreamConfig, config: StreamConfig) -> bool:
    """An async stream that must get more than one replica (JetStream refuses
    async there, and cannot change the mode in place)."""
    return have.persist_mode == PersistMode.ASYNC and (config.num_replicas or 1) > 1


def _keep_persist_mode(have: StreamConfig, config: StreamConfig) -> None:
    """JetStream cannot change a stream's persist mode in place, and making the
    stream anew would drop what it holds: an existing stream keeps its mode
    (said once at start; removing the stream gives it this release's), unless
    it must be replicated (:func:`_async_replicated`)."""
    want = config.persist_mode or PersistMode.DEFAULT
    if (have.persist_mode or PersistMode.DEFAULT) != want:
        log.info("stream %s keeps persist mode %s (this release makes it %s; remove the "
                 "stream to change it: nats stream rm %s)", config.name,
                 _word(have.persist_mode or PersistMode.DEFAULT), _word(want), config.name)
    config.persist_mode = have.persist_mode


def _word(setting: object) -> str:
    """``StorageType.FILE`` -> ``file``, as the nats CLI shows it."""
    return str(getattr(setting, "value", setting))


def _differs(have: object, want: object) -> bool:
    if want is None:
        return False  # not asked for (e.g. schedules on a stream without timers)
    if isinstance(want, list) and isinstance(have, list):
        return sorted(want) != sorted(have)
    return bool(have != want)


async def _retire(js: JetStreamContext, name: str) -> None:
    """Remove a stream of an older release once nothing is left in it."""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return
    if info.state.messages:
        log.warning("warning: stream %s of an older Postbus still holds %d messages; "
                    "it is removed when empty", name, info.state.messages)
        return
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(name)
        log.info("removed stream %s of an older Postbus", name)


class StreamMismatch(ConfigError):
    """A stream cannot be made or brought to this release's settings: the role
    stops at start with this one line (a configuration error)."""
