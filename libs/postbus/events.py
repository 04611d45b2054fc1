"""Queue events: every state change of a queued message, as data (log lines, for programs).

Each change is one JSON event on the durable stream ``POSTBUS_EVENTS``, subject
``postbus.event.<kind>``. Webhooks (the ``webhooks`` role) and ``postbus
events`` read it. The kinds, with the fields each adds to the common ones
(``v`` = 1, ``kind``, ``id``: unique per event, the receivers' idempotency
key; ``queue_id``; ``time``: Unix seconds):

* ``received``: sender, recipients, nrcpt, size, client (``name[addr]``),
  helo, protocol, message_id: the message was queued (Postfix's cleanup line);
* ``active``: attempt: a delivery attempt began (qmgr's ``(queue active)``);
* ``deferred``, ``delivered``, ``bounced``, ``expired``: one per recipient,
  as Postfix's ``to=<...>, relay=..., dsn=..., status=... (reason)`` line:
  sender, recipient, orig_recipient, transport, relay, dsn, reason (the
  reply or the reason text), delay (seconds since arrival), attempt;
  ``deferred`` adds next_attempt;
* ``held``, ``released``, ``requeued``, ``deleted``: who, why (postsuper, or
  the hold action of a check);
* ``removed``: reason: the message left the queue (Postfix's ``removed``).

Version 1 grows by new fields only; readers ignore fields they do not know.
Recording is checked against JetStream's acknowledgement, and an event must
never hold up mail: a failure is logged and counted
(``postbus_events_failed``), never raised. Events observe the queue, the
queue entry is the truth: a single-replica stream is ``persist_mode: async``
(acknowledged before its fsync, which nats-server batches), so a crash of
nats-server or of the host may lose the last events (a restart of it or of
any role does not); that leaves one fsynced write per message, its queue
file (see docs/queue.md). The stream
keeps events within ``postbus_events_max_age``, ``postbus_events_max_bytes``
and ``postbus_events_max_msgs``; the oldest go first. ``postbus_events_record``
says which kinds are recorded at all (each costs a JetStream write; by default
every kind but ``active`` and ``removed``, which repeat the log's lines).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, get_type_hints

import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType
from nats.js.errors import NotFoundError

from postbus import metrics
from postbus.bus import subjects as s
from postbus.config.conv import ConfigError, parse_int, parse_size, parse_time
from postbus.params import PARAMS

if TYPE_CHECKING:
    from postbus.bus.jetstream import StreamSpec
    from postbus.config.loader import Config
    from postbus.queue.entry import QueueEntry, Recipient

log = logging.getLogger("postbus.events")

EVENT_VERSION = 1
PUBLISH_TIMEOUT = 2.0  # seconds to wait for JetStream's acknowledgement of one event
MAX_AGE, MAX_BYTES, MAX_MSGS = (
    "postbus_events_max_age", "postbus_events_max_bytes", "postbus_events_max_msgs"
)
RECORD = "postbus_events_record"


class EventError(ValueError):
    """An event that cannot be decoded."""


_ID_PREFIX = secrets.token_hex(8)  # this process's; a counter numbers its events
_id_counter = itertools.count(1)


def _new_id() -> str:
    """Unique per event (32 hex digits, as a UUID's): a random prefix per process
    and a counter, without a call for random bytes per event."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


@dataclass(frozen=True, kw_only=True)
class Event:
    """What every event carries."""

    kind: ClassVar[str] = ""
    id: str = field(default_factory=_new_id)
    queue_id: str
    time: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return orjson.dumps({"v": EVENT_VERSION, "kind": self.kind, **self.__dict__})

    @property
    def subject(self) -> str:
        return s.event_subject(self.kind)


@dataclass(frozen=True, kw_only=True)
class Received(Event):
    kind: ClassVar[str] = "received"
    sender: str = ""
    recipients: tuple[str, ...] = ()
    nrcpt: int = 0
    size: int = 0
    client: str = ""  # name[addr], as Postfix's client= field
    helo: str = ""
    protocol: str = ""
    message_id: str = ""


@dataclass(frozen=True, kw_only=True)
class Active(Event):
    kind: ClassVar[str] = "active"
    attempt: int = 0


@dataclass(frozen=True, kw_only=True)
class RecipientEvent(Event):
    """One recipient's outcome (an empty recipient: the message as a whole)."""

    sender: str = ""
    recipient: str = ""
    orig_recipient: str = ""
    transport: str = ""  # transport:nexthop
    relay: str = ""  # host[addr]:port, or the local transport's name
    dsn: str = ""
    reason: str = ""  # the reply or reason text, as in the log line's "(...)"
    delay: float = 0.0  # seconds since arrival
    attempt: int = 0


@dataclass(frozen=True, kw_only=True)
class Deferred(RecipientEvent):
    kind: ClassVar[str] = "deferred"
    next_attempt: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Delivered(RecipientEvent):
    kind: ClassVar[str] = "delivered"


@dataclass(frozen=True, kw_only=True)
class Bounced(RecipientEvent):
    kind: ClassVar[str] = "bounced"


@dataclass(frozen=True, kw_only=True)
class Expired(RecipientEvent):
    kind: ClassVar[str] = "expired"


@dataclass(frozen=True, kw_only=True)
class AdminEvent(Event):
    """A change an administrator (or a check's action) made."""

    who: str = ""  # the user running postsuper, or the role
    why: str = ""  # the command, or the check and its text


@dataclass(frozen=True, kw_only=True)
class Held(AdminEvent):
    kind: ClassVar[str] = "held"


@dataclass(frozen=True, kw_only=True)
class Released(AdminEvent):
    kind: ClassVar[str] = "released"


@dataclass(frozen=True, kw_only=True)
class Requeued(AdminEvent):
    kind: ClassVar[str] = "requeued"


@dataclass(frozen=True, kw_only=True)
class Deleted(AdminEvent):
    kind: ClassVar[str] = "deleted"


@dataclass(frozen=True, kw_only=True)
class Removed(Event):
    kind: ClassVar[str] = "removed"
    reason: str = ""  # delivered, bounced


_CLASSES: tuple[type[Event], ...] = (
    Received, Active, Deferred, Delivered, Bounced, Expired,
    Held, Released, Requeued, Deleted, Removed,
)
KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in _CLASSES}
#: What a webhook receives unless postbus_webhook_events says otherwise.
DEFAULT_KINDS = ("received", "deferred", "delivered", "bounced", "expired",
                 "held", "released", "deleted")
#: Names of WorkBus.event() callers written before this module.
LEGACY_KINDS = {"incoming": "received", "hold": "held"}
BY_STATE: dict[str, type[RecipientEvent]] = {
    "sent": Delivered, "deferred": Deferred, "bounced": Bounced, "expired": Expired,
}

_Check = Callable[[Any], bool]
_TYPE_CHECKS: dict[Any, _Check] = {
    str: lambda v: type(v) is str,
    int: lambda v: type(v) is int,
    float: lambda v: type(v) in (float, int),
    tuple[str, ...]: lambda v: type(v) in (list, tuple) and all(type(i) is str for i in v),
}
_FIELDS: dict[type[Event], dict[str, _Check]] = {
    cls: {f.name: _TYPE_CHECKS[get_type_hints(cls)[f.name]] for f in fields(cls)}
    for cls in _CLASSES
}
for _kind in (*KINDS, "other"):
    metrics.events_published.labels(_kind)
    metrics.events_failed.labels(_kind)

#: The kinds this process records (postbus_events_record; every kind until configured).
recorded: frozenset[str] = frozenset(KINDS)


def configure(cfg: Config) -> None:
    """Record only the kinds postbus_events_record names (each event costs a
    JetStream write: a system nobody observes may record none)."""
    global recorded
    kinds = cfg.list(RECORD)
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise ConfigError(f"unknown event kind {unknown[0]!r}; known: {', '.join(KINDS)}",
                          parameter=RECORD)
    recorded = frozenset(kinds)


# -- building -----------------------------------------------------------------------


def make(kind: str, queue_id: str, **values: Any) -> Event:
    """The event of ``kind``; KeyError for an unknown kind, TypeError for a bad field."""
    cls = KINDS[kind]
    checks = _FIELDS[cls]
    for name, value in values.items():
        check = checks.get(name)
        if check is None:
            raise TypeError(f"event {kind} has no field {name}")
        if not check(value):
            raise TypeError(f"event {kind}: field {name} has a bad value {value!r:.60}")
    if "recipients" in values:
        values["recipients"] = tuple(values["recipients"])
    return cls(queue_id=queue_id, **values)


def received(entry: QueueEntry) -> Received:
    """The ``received`` event of a message just queued."""
    client = f"{entry.client_name}[{entry.client_addr}]" if entry.client_addr else ""
    return Received(
        queue_id=entry.queue_id, sender=entry.sender,
        recipients=tuple(r.address for r in entry.recipients), nrcpt=len(entry.recipients),
        size=entry.size, client=client, helo=entry.helo, protocol=entry.protocol,
        message_id=entry.message_id,
    )


def for_recipient(entry: QueueEntry, rcpt: Recipient, now: float | None = None) -> Event | None:
    """The event of a recipient's state after an attempt (delivered, deferred,
    bounced, expired); None while it is pending or active."""
    cls = BY_STATE.get(rcpt.state)
    if cls is None:
        return None
    now = time.time() if now is None else now
    values: dict[str, Any] = dict(
        queue_id=entry.queue_id, sender=entry.sender, recipient=rcpt.address,
        orig_recipient=rcpt.orig_rcpt, transport=rcpt.transport, relay=rcpt.relay,
        dsn=rcpt.dsn, reason=rcpt.reason, delay=round(max(0.0, now - entry.arrival_time), 3),
        attempt=entry.attempts, time=now,
    )
    if cls is Deferred:
        values["next_attempt"] = entry.next_attempt
    return cls(**values)


# -- reading ------------------------------------------------------------------------


def decode(raw: bytes) -> Event:
    """An event from its JSON; fields of a newer version are ignored, not refused."""
    try:
        data = orjson.loads(raw)
    except ValueError as exc:
        raise EventError(f"not JSON: {exc}") from exc
    if type(data) is not dict or data.get("v") != EVENT_VERSION:
        raise EventError("unknown event version")
    cls = KINDS.get(data.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise EventError(f"unknown event kind {data.get('kind')!r:.40}")
    checks = _FIELDS[cls]
    values: dict[str, Any] = {}
    for name, value in data.items():
        check = checks.get(name)
        if check is None:
            continue
        if not check(value):
            raise EventError(f"bad {cls.kind} event: field {name} has a bad value {value!r:.60}")
        values[name] = tuple(value) if name == "recipients" else value
    if type(values.get("queue_id")) is not str:
        raise EventError(f"bad {cls.kind} event: no queue_id")
    return cls(**values)


def kind_of(subject: str) -> str:
    """``postbus.event.<kind>`` -> ``<kind>``."""
    return subject.rsplit(".", 1)[-1]


# -- recording ----------------------------------------------------------------------


async def publish(bus: NATS | JetStreamContext, event: Event) -> bool:
    """Record one event durably; False (logged, counted) when it could not be.
    A kind postbus_events_record leaves out is not recorded (and that is True)."""
    if event.kind not in recorded:
        return True
    js = bus.jetstream() if isinstance(bus, NATS) else bus
    try:
        await js.publish(
            event.subject, event.encode(), timeout=PUBLISH_TIMEOUT, stream=s.EVENTS_STREAM,
            headers={"Nats-Msg-Id": event.id},
        )
    except Exception as exc:
        log.warning("%s: cannot record event %s: %s", event.queue_id, event.kind,
                    str(exc) or type(exc).__name__)
        metrics.events_failed.labels(event.kind).inc()
        return False
    metrics.events_published.labels(event.kind).inc()
    return True


async def publish_event(bus: NATS | JetStreamContext, kind: str, queue_id: str,
                        **values: Any) -> bool:
    """Record a state change by name, waiting for JetStream (postsuper); never raises."""
    event = event_named(kind, queue_id, **values)
    return False if event is None else await publish(bus, event)


def event_named(kind: str, queue_id: str, **values: Any) -> Event | None:
    """A state change by name (what ``WorkBus.event`` records); None for a bug.

    Names of the first emitters are mapped (incoming: received, hold: held,
    removed with reason deleted: deleted); an unknown kind or field is a bug,
    logged, and what can be recorded still is."""
    kind = LEGACY_KINDS.get(kind, kind)
    if kind == "removed" and values.get("reason") == "deleted":
        kind = "deleted"
        values = {k: v for k, v in values.items() if k != "reason"}
    cls = KINDS.get(kind)
    if cls is None:
        log.error("%s: unknown event kind %s: not recorded", queue_id, kind)
        metrics.events_failed.labels("other").inc()
        return None
    checks = _FIELDS[cls]
    kept = {name: value for name, value in values.items()
            if name in checks and checks[name](value)}
    if len(kept) != len(values):
        log.error("%s: event %s: fields left out: %s", queue_id, kind,
                  ", ".join(sorted(set(values) - set(kept))))
    return make(kind, queue_id, **kept)


# -- the stream ---------------------------------------------------------------------


def limits(cfg: Config | None = None) -> tuple[float, int, int]:
    """(max_age seconds, max_bytes, max_msgs) from the configuration, JetStream's
    way: 0 age and -1 sizes mean no limit."""
    if cfg is not None:
        age, size, count = cfg.time(MAX_AGE), cfg.size(MAX_BYTES), cfg.int(MAX_MSGS)
    else:
        age = parse_time(PARAMS[MAX_AGE].default)
        size = parse_size(PARAMS[MAX_BYTES].default)
        count = parse_int(PARAMS[MAX_MSGS].default)
    return age, size or -1, count or -1


def stream_spec(cfg: Config | None = None) -> StreamSpec:
    """POSTBUS_EVENTS: on disk, limited by age, bytes and count, oldest dropped first."""
    from postbus.bus.jetstream import StreamSpec  # jetstream lists this spec

    age, size, count = limits(cfg)
    return StreamSpec(
        s.EVENTS_STREAM, (s.EVENT_SUBJECTS,), RetentionPolicy.LIMITS, age, StorageType.FILE,
        max_bytes=size, max_msgs=count, replaceable=True, persist_async=True,
    )


async def ensure_stream(js: JetStreamContext, cfg: Config) -> None:
    """Give an existing POSTBUS_EVENTS the configured limits (ensure_streams
    creates it but leaves an existing stream alone). The memory stream of
    earlier versions is replaced by the file one: it held no mail, only events."""
    try:
        await _reconcile(js, *limits(cfg))
    except Exception as exc:  # events must not stop a role that handles mail
        log.warning("warning: cannot give %s the configured limits: %s", s.EVENTS_STREAM, exc)


async def _reconcile(js: JetStreamContext, age: float, size: int, count: int) -> None:
    try:
        info = await js.stream_info(s.EVENTS_STREAM)
    except NotFoundError:
        return
    config = info.config
    if config.storage == StorageType.MEMORY:
        log.info("replacing the memory stream %s by a file stream", s.EVENTS_STREAM)
        await js.delete_stream(s.EVENTS_STREAM)
        config.storage = StorageType.FILE
        config.max_age, config.max_bytes, config.max_msgs = age, size, count
        await js.add_stream(config)
        return
    if (config.max_age or 0.0, config.max_bytes, config.max_msgs) != (age, size, count):
        config.max_age, config.max_bytes, config.max_msgs = age, size, count
        await js.update_stream(config)
        log.info("%s: limits max_age=%gs, max_bytes=%d, max_msgs=%d",
                 s.EVENTS_STREAM, age, size, count)
