"""The webhooks' dead letters: events a webhook gave up on, kept for an administrator.

``POSTBUS_WEBHOOK_DEAD`` holds one record per event and webhook on
``postbus.webhook.dead.<name>``: the event exactly as it was POSTed, and
``Postbus-Webhook-*`` headers saying how many attempts were made, the last
error, the endpoint (without query or credentials) and when it gave up. It is
kept as long as events are (``postbus_events_*`` limits). The webhooks role
writes it; ``postbus events --dead-letter NAME`` reads it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from postbus import events
from postbus.bus import subjects as s
from postbus.config.loader import Config

NAME = "Postbus-Webhook-Name"
URL = "Postbus-Webhook-Url"
ATTEMPTS = "Postbus-Webhook-Attempts"
ERROR = "Postbus-Webhook-Error"
TIME = "Postbus-Webhook-Time"
SUBJECT = "Postbus-Event-Subject"
SEQUENCE = "Postbus-Event-Sequence"


async def ensure_stream(js: JetStreamContext, cfg: Config) -> None:
    """Make the dead-letter stream if it is missing."""
    age, size, count = events.limits(cfg)
    config = StreamConfig(
        name=s.WEBHOOK_DEAD_STREAM, subjects=[s.WEBHOOK_DEAD_SUBJECTS],
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
        num_replicas=cfg.int("postbus_stream_replicas"), max_age=age, max_bytes=size,
        max_msgs=count, discard=DiscardPolicy.OLD, duplicate_window=120.0,
    )
    try:
        await js.stream_info(s.WEBHOOK_DEAD_STREAM)
    except NotFoundError:
        with contextlib.suppress(BadRequestError):  # another replica made it first
            await js.add_stream(config)


async def keep(js: JetStreamContext, name: str, msg: Msg, *, attempts: int, error: str,
               url: str) -> None:
    """Store the dead letter of event ``msg`` for webhook ``name`` (raises if it cannot)."""
    sequence = msg.metadata.sequence.stream
    headers = {
        "Nats-Msg-Id": f"{name}.{sequence}",  # stored once, should we crash before the ack
        NAME: name,
        URL: url,
        ATTEMPTS: str(attempts),
        ERROR: " ".join(error.split())[:1000],
        TIME: f"{time.time():.3f}",
        SUBJECT: msg.subject,
        SEQUENCE: str(sequence),
    }
    await js.publish(s.webhook_dead_subject(name), msg.data, stream=s.WEBHOOK_DEAD_STREAM,
                     headers=headers)


@dataclass(frozen=True)
class DeadLetter:
    webhook: str
    url: str
    attempts: int
    error: str
    time: float
    event: Any  # the event's JSON, or its text when it was not JSON

    @classmethod
    def read(cls, msg: Msg) -> DeadLetter:
        headers = msg.headers or {}
        try:
            event: Any = orjson.loads(msg.data)
        except ValueError:
            event = msg.data.decode("utf-8", "replace")
        return cls(
            webhook=headers.get(NAME, ""), url=headers.get(URL, ""),
            attempts=_number(headers.get(ATTEMPTS), int), error=headers.get(ERROR, ""),
            time=_number(headers.get(TIME), float), event=event,
        )

    def as_json(self) -> bytes:
        return orjson.dumps(self.__dict__)


def _number(text: str | None, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text or 0)
    except ValueError:
        return kind(0)
