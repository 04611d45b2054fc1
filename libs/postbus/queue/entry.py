"""The queue entry: the one definition of a queued message (≈ rec_type.h).

An entry is the mutable half of a queued message (envelope, per-recipient
state, which queue it is in); the content is stored once, immutably, beside
it. Entries are encoded as versioned JSON and decoded strictly: an unknown
version, a missing or unknown field, or a field of the wrong type (a string
for a count, a state outside its Literal, a bool for an int) is a
:class:`CodecError`, never a guess and never a TypeError later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import orjson

CODEC_VERSION = 1

_T = TypeVar("_T")

QueueName = Literal["incoming", "active", "deferred", "hold", "corrupt"]
QUEUE_NAMES: tuple[QueueName, ...] = ("incoming", "active", "deferred", "hold", "corrupt")

RcptState = Literal["pending", "active", "sent", "deferred", "bounced", "expired"]
FINAL_STATES = frozenset({"sent", "bounced", "expired"})


class CodecError(ValueError):
    """A queue entry or bus payload that cannot be decoded."""


@dataclass
class Recipient:
    """One envelope recipient and what has happened to it so far."""

    address: str
    orig_rcpt: str = ""
    notify: str = ""  # RFC 3461 NOTIFY, e.g. "SUCCESS,DELAY,FAILURE" or "NEVER"
    state: RcptState = "pending"
    dsn: str = ""  # enhanced status code of the last attempt, e.g. "4.4.1"
    reason: str = ""  # the text a bounce or postqueue -p shows
    relay: str = ""  # host[addr]:port of the last attempt
    transport: str = ""  # transport:nexthop of the last attempt
    reported: bool = False  # the notice its final state asks for (bounce, success) went out
    bounce_to: str = ""  # its non-delivery notice goes here, not to the sender (an owner- alias)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class QueueEntry:
    """A message's envelope and queue state, stored under its queue ID."""

    queue_id: str
    sender: str
    recipients: list[Recipient]
    arrival_time: float = field(default_factory=time.time)
    size: int = 0
    chunks: int = 1
    queue: QueueName = "incoming"
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float = 0.0
    message_id: str = ""
    client_name: str = ""
    client_addr: str = ""
    helo: str = ""
    protocol: str = "ESMTP"
    env_id: str = ""  # RFC 3461 ENVID
    ret: str = ""  # RFC 3461 RET=FULL|HDRS
    smtputf8: bool = False
    bounce_of: str = ""  # queue ID this message reports on, for bounces
    warned: bool = False  # delay warning sent
    notified: bool = False  # (unused since notices are per recipient: Recipient.reported)
    attempt_id: str = ""  # the current attempt; '' before the first
    holder: int = 0  # stream sequence of the trigger or wake-up holding that attempt open
    filter: str = ""  # content_filter or a FILTER action: transport:nexthop for every recipient
    client_port: str = ""  # the client's TCP port (XFORWARD PORT)
    log_ident: str = ""  # an upstream queue ID given by XFORWARD IDENT (else our own)
    rewrite_context: str = ""  # "remote", or "" for local (Postfix's qmgr default)
    bucket: str = ""  # where its queue file lives (postbus.bus.subjects); set by who reads it

    def record(self, status: DeliveryStatus) -> bool:
        """Apply a delivery report to the recipients it covers (as Postfix's agents
        mark recipients done in the queue file); False when a duplicate.

        A report of an earlier attempt still counts for what it says was
        delivered or bounced: that happened. Only recipients still active or
        deferred take it; a final recipient never changes again."""
        changed = False
        current = status.attempt_id == self.attempt_id
        for result in status.results:
            if result.index >= len(self.recipients):
                continue
            rcpt = self.recipients[result.index]
            if rcpt.final:
                continue
            if current and rcpt.state not in ("active", "pending"):
                continue  # a duplicate report (pending: a first attempt that wrote nothing)
            if not current and result.status == "deferred":
                continue  # a stale deferral: the current attempt decides
            rcpt.state = result.status
            rcpt.dsn, rcpt.reason, rcpt.relay = result.dsn, result.reason, result.relay
            rcpt.bounce_to = result.bounce_to
            changed = True
        return changed

    def all_sent(self) -> bool:
        return all(r.state == "sent" for r in self.recipients)

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state in ("pending", "active")]

    def finished(self) -> bool:
        return all(r.final for r in self.recipients)

    def encode(self) -> bytes:
        return _dump(self, "recipients", OPTIONAL)

    @classmethod
    def decode(cls, raw: bytes) -> QueueEntry:
        return _build(cls, _load(raw), "recipients", Recipient, "queue entry")


#: Fields written only when set, so that an entry without them stays readable by
#: the version before them (a rolling upgrade): they decode to their defaults.
OPTIONAL = ("filter", "client_port", "log_ident", "rewrite_context", "bucket")
#: The same for the items of a nested list (a recipient, a recipient's result).
ITEM_OPTIONAL = "bounce_to"

#: The same for a job: agents of the version before them still read jobs without them.
JOB_OPTIONAL = ("client_name", "client_addr", "client_port", "helo", "protocol", "log_ident",
                "rewrite_context", "smtputf8")


def _dump(obj: Any, nested: str, optional: tuple[str, ...] = ()) -> bytes:
    """Versioned JSON of a flat dataclass whose ``nested`` field lists dataclasses
    (hand-rolled rather than dataclasses.asdict: this runs for every message)."""
    data = dict(obj.__dict__)
    for name in optional:
        if not data[name]:
            del data[name]
    data[nested] = [_item(item.__dict__) for item in data[nested]]
    data["v"] = CODEC_VERSION
    return orjson.dumps(data)


def _item(data: dict[str, Any]) -> dict[str, Any]:
    if data.get(ITEM_OPTIONAL, True):
        return data
    return {k: v for k, v in data.items() if k != ITEM_OPTIONAL}


def _load(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except ValueError as exc:
        raise CodecError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.pop("v", None) != CODEC_VERSION:
        raise CodecError("unknown codec version")
    return data


@dataclass
class DeliveryJob:
    """One delivery attempt for the recipients of a message that share a next hop."""

    queue_id: str
    transport: str
    nexthop: str
    sender: str
    recipients: list[Recipient]
    indexes: list[int]  # positions of these recipients in the entry
    attempt: int
    arrival_time: float
    size: int
    chunks: int
    queued_time: float = field(default_factory=time.time)  # when qmgr handed it out
    active_time: float = 0.0  # when qmgr took the message in (delays= a)
    env_id: str = ""
    ret: str = ""
    whole: bool = False  # these are all of the message's recipients, none settled before
    attempt_id: str = ""  # the attempt this job belongs to (idempotency keys, fencing)
    token: str = ""  # the ack subject of the trigger or wake-up that holds the attempt
    recheck: bool = False  # an attempt taken up again: check it is current before delivery
    destination: str = ""  # the scheduler's name for the next hop (Postfix's queue name)
    bucket: str = ""  # where the message's queue file lives (its content, its removal)
    # the entry's client attributes, for XFORWARD (smtp_send_xforward_command), and its
    # SMTPUTF8 request; written only when set (JOB_OPTIONAL)
    client_name: str = ""
    client_addr: str = ""
    client_port: str = ""
    helo: str = ""
    protocol: str = ""
    log_ident: str = ""
    rewrite_context: str = ""
    smtputf8: bool = False

    @property
    def key(self) -> str:
        """Names this job for its life: idempotency keys, concurrency slots."""
        return f"{self.queue_id} {self.attempt_id}.{self.indexes[0] if self.indexes else 0}"

    def encode(self) -> bytes:
        return _dump(self, "recipients", JOB_OPTIONAL)

    @classmethod
    def decode(cls, raw: bytes) -> DeliveryJob:
        return _build(cls, _load(raw), "recipients", Recipient, "delivery job")


@dataclass
class RcptResult:
    """What a delivery agent did with one recipient of a job."""

    index: int
    status: Literal["sent", "deferred", "bounced"]
    dsn: str
    reason: str
    relay: str = ""
    bounce_to: str = ""  # notify this address of a bounce instead of the sender (owner- alias)


@dataclass
class DeliveryStatus:
    """A delivery agent's report on one job, sent back to the qmgr."""

    queue_id: str
    attempt: int
    transport: str
    nexthop: str
    results: list[RcptResult]
    attempt_id: str = ""
    token: str = ""  # the job's token, handed back so any qmgr can end the attempt
    whole: bool = False  # the job held every recipient of the message
    bucket: str = ""  # the job's: where the queue file lives, for removing it

    def encode(self) -> bytes:
        return _dump(self, "results")

    @classmethod
    def decode(cls, raw: bytes) -> DeliveryStatus:
        return _build(cls, _load(raw), "results", RcptResult, "delivery status")


# -- strict decoding -------------------------------------------------------------

_Check = Callable[[Any], bool]


def _check_for(hint: Any) -> _Check:
    """A type test for one field as JSON gives it back (a float field takes an int too)."""
    if get_origin(hint) is Literal:
        allowed = frozenset(get_args(hint))
        return lambda v: type(v) is str and v in allowed
    if get_origin(hint) is list and get_args(hint) == (int,):
        return lambda v: type(v) is list and all(type(i) is int for i in v)
    if hint is float:
        return lambda v: type(v) is float or type(v) is int
    if hint in (str, int, bool):
        return lambda v: type(v) is hint
    raise TypeError(f"no JSON check for {hint}")  # pragma: no cover - a new field type


def _checks(cls: type, nested: str = "") -> dict[str, _Check]:
    hints = get_type_hints(cls)
    return {f.name: _check_for(hints[f.name]) for f in fields(cls) if f.name != nested}


_CHECKS: dict[type, dict[str, _Check]] = {
    QueueEntry: _checks(QueueEntry, "recipients"),
    DeliveryJob: _checks(DeliveryJob, "recipients"),
    DeliveryStatus: _checks(DeliveryStatus, "results"),
    Recipient: _checks(Recipient),
    RcptResult: _checks(RcptResult),
}


def _typed(cls: type, data: Any, what: str) -> dict[str, Any]:
    if type(data) is not dict:
        raise CodecError(f"bad {what}: not an object")
    checks = _CHECKS[cls]
    for name, value in data.items():
        check = checks.get(name)
        if check is None:
            raise CodecError(f"bad {what}: unknown field {name!r}")
        if not check(value):
            raise CodecError(f"bad {what}: field {name} has a bad value {value!r:.60}")
    return data


def _build(cls: type[_T], data: dict[str, Any], nested: str, item: type, what: str) -> _T:
    """``cls(**data)`` after every field and every item of ``data[nested]`` was checked."""
    items = data.pop(nested, None)
    if type(items) is not list:
        raise CodecError(f"bad {what}: {nested} is missing or not a list")
    try:
        built = [item(**_typed(item, one, what)) for one in items]
        return cls(**{nested: built}, **_typed(cls, data, what))
    except TypeError as exc:  # a missing field
        raise CodecError(f"bad {what}: {exc}") from exc
