"""The queue entry: the one definition of a queued message (≈ rec_type.h).

An entry is the mutable half of a queued message (envelope, per-recipient
state, which queue it is in); the content is stored once, immutably, beside
it. Entries are encoded as versioned JSON and decoded strictly: an unknown
version or a missing field is an error, never a guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

CODEC_VERSION = 1

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
    notified: bool = False  # non-delivery notification already queued

    def record(self, status: DeliveryStatus) -> bool:
        """Apply a delivery report to the recipients it covers (as Postfix's agents
        mark recipients done in the queue file); False when stale or a duplicate."""
        if self.attempts != status.attempt:
            return False
        changed = False
        for result in status.results:
            if result.index >= len(self.recipients):
                continue
            rcpt = self.recipients[result.index]
            if rcpt.state != "active":
                continue
            rcpt.state = result.status
            rcpt.dsn, rcpt.reason, rcpt.relay = result.dsn, result.reason, result.relay
            changed = True
        return changed

    def all_sent(self) -> bool:
        return all(r.state == "sent" for r in self.recipients)

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state in ("pending", "active")]

    def finished(self) -> bool:
        return all(r.final for r in self.recipients)

    def encode(self) -> bytes:
        return _dump(self, "recipients")

    @classmethod
    def decode(cls, raw: bytes) -> QueueEntry:
        data = _load(raw)
        try:
            recipients = [Recipient(**r) for r in data.pop("recipients")]
            return cls(recipients=recipients, **data)
        except (KeyError, TypeError) as exc:
            raise CodecError(f"bad queue entry: {exc}") from exc


def _dump(obj: Any, nested: str) -> bytes:
    """Versioned JSON of a flat dataclass whose ``nested`` field lists dataclasses
    (hand-rolled rather than dataclasses.asdict: this runs for every message)."""
    data = dict(obj.__dict__)
    data[nested] = [item.__dict__ for item in data[nested]]
    data["v"] = CODEC_VERSION
    return orjson.dumps(data)


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

    def encode(self) -> bytes:
        return _dump(self, "recipients")

    @classmethod
    def decode(cls, raw: bytes) -> DeliveryJob:
        data = _load(raw)
        try:
            data["recipients"] = [Recipient(**r) for r in data["recipients"]]
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise CodecError(f"bad delivery job: {exc}") from exc


@dataclass
class RcptResult:
    """What a delivery agent did with one recipient of a job."""

    index: int
    status: Literal["sent", "deferred", "bounced"]
    dsn: str
    reason: str
    relay: str = ""


@dataclass
class DeliveryStatus:
    """A delivery agent's report on one job, sent back to the qmgr."""

    queue_id: str
    attempt: int
    transport: str
    nexthop: str
    results: list[RcptResult]

    def encode(self) -> bytes:
        return _dump(self, "results")

    @classmethod
    def decode(cls, raw: bytes) -> DeliveryStatus:
        data = _load(raw)
        try:
            data["results"] = [RcptResult(**r) for r in data["results"]]
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise CodecError(f"bad delivery status: {exc}") from exc
