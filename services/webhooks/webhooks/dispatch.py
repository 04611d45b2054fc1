"""From the event stream to one webhook: at least once, with backoff, then dead letters.

Each webhook reads ``POSTBUS_EVENTS`` through its own durable consumer
(``webhook-<name>``), so every endpoint gets every event whatever the others
do, and any number of replicas of one webhook share its work. An event is
acknowledged only after a 2xx reply (or after its dead-letter record is
stored): a process killed mid-POST, or a restarted nats-server, means the
event is POSTed again, never lost. Receivers deduplicate on ``webhook-id``.

A failed POST is retried by JetStream itself (a nak with a delay doubling from
``postbus_webhook_minimal_backoff_time`` to ``..._maximal_backoff_time``), so
retries survive restarts too. The ``postbus_webhook_max_attempts``-th failure
moves the event to ``postbus.webhook.dead.<name>`` (``postbus events
--dead-letter <name>`` lists them). Events arrive in order but retries do
not keep it: use each event's ``time``.

A new webhook starts with the events published after its consumer is made
(older ones would flood a new endpoint); ``postbus events --since`` shows those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from postbus import dead_letters, events, metrics
from postbus.bus import subjects as s
from webhooks.sender import Outcome, Sender
from webhooks.settings import Settings

log = logging.getLogger("postbus.webhooks")

MAX_ACK_PENDING = 1000  # events in flight or waiting for a retry, per webhook


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=s.webhook_consumer(settings.name),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.NEW,
        filter_subject=s.EVENT_SUBJECTS,
        # a POST may take the whole timeout; only a dead process lets it expire
        ack_wait=2 * settings.timeout + 5,
        max_deliver=-1,  # the dispatcher counts attempts and dead-letters the last
        max_ack_pending=max(MAX_ACK_PENDING, settings.concurrency * 4),
    )


async def ensure_consumer(js: JetStreamContext, settings: Settings) -> None:
    """Make the webhook's durable consumer, or bring its limits up to date."""
    config = consumer_config(settings)
    assert config.durable_name is not None
    try:
        info = await js.consumer_info(s.EVENTS_STREAM, config.durable_name)
    except NotFoundError:
        await js.add_consumer(s.EVENTS_STREAM, config)
        return
    if (info.config.ack_wait, info.config.max_ack_pending) != (
            config.ack_wait, config.max_ack_pending):
        info.config.ack_wait, info.config.max_ack_pending = config.ack_wait, config.max_ack_pending
        await js.add_consumer(s.EVENTS_STREAM, info.config)  # create-or-update


class Dispatcher:
    """The consumer handler of one webhook."""

    def __init__(self, settings: Settings, js: JetStreamContext, sender: Sender) -> None:
        self.settings = settings
        self.js = js
        self.sender = sender
        name = settings.name
        metrics.webhook_retries.labels(name)
        metrics.webhook_dead_letters.labels(name)
        for result in ("sent", "failed"):
            metrics.webhook_requests.labels(name, result)

    async def handle(self, msg: Msg) -> None:
        kind = events.kind_of(msg.subject)
        if kind not in self.settings.kinds or not self.settings.url:
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered or 1
        try:
            event = events.decode(msg.data)
        except events.EventError as exc:  # nothing a receiver could use: kept, not retried
            await self.dead_letter(msg, "", attempt, f"not a Postbus event: {exc}")
            return
        event_id = (msg.headers or {}).get("Nats-Msg-Id") or event.id
        outcome = await self.sender.post(msg.data, event_id, kind, attempt)
        if outcome.ok:
            log.debug("%s: webhook %s: event %s sent: %s (%.3fs)", event.queue_id,
                      self.settings.name, kind, outcome.detail, outcome.seconds)
            await msg.ack()
        elif attempt >= self.settings.max_attempts:
            await self.dead_letter(msg, event.queue_id, attempt, outcome.detail)
        else:
            await self.retry(msg, event.queue_id, kind, attempt, outcome)

    async def retry(self, msg: Msg, queue_id: str, kind: str, attempt: int,
                    outcome: Outcome) -> None:
        delay = self.settings.backoff(attempt)
        log.warning("%s: webhook %s: event %s, attempt %d of %d: %s: %s; trying again in %gs",
                    queue_id, self.settings.name, kind, attempt, self.settings.max_attempts,
                    self.settings.shown_url, outcome.detail, delay)
        metrics.webhook_retries.labels(self.settings.name).inc()
        await msg.nak(delay=delay)

    async def dead_letter(self, msg: Msg, queue_id: str, attempt: int, why: str) -> None:
        """Keep the event on the dead-letter subject, then let it go; if it cannot be
        kept, it stays on the events stream and comes back later."""
        name = self.settings.name
        try:
            await dead_letters.keep(self.js, name, msg, attempts=attempt, error=why,
                                    url=self.settings.shown_url)
        except Exception as exc:
            delay = self.settings.backoff(attempt)
            log.warning("%s: webhook %s: cannot keep a dead letter: %s; trying again in %gs",
                        queue_id or "NOQUEUE", name, exc, delay)
            await msg.nak(delay=delay)
            return
        log.warning("%s: webhook %s: event %s given up after %d attempt%s: %s: %s; kept on %s",
                    queue_id or "NOQUEUE", name, events.kind_of(msg.subject), attempt,
                    "" if attempt == 1 else "s", self.settings.shown_url, why,
                    s.webhook_dead_subject(name))
        metrics.webhook_dead_letters.labels(name).inc()
        await msg.ack()


async def watch_pending(js: JetStreamContext, settings: Settings, stopping: asyncio.Event,
                        interval: float = 10.0) -> None:
    """Keep postbus_webhook_pending up to date (events not yet sent nor given up).
    (A consumer that is gone is declared again by the consumer loop.)"""
    durable = s.webhook_consumer(settings.name)
    while not stopping.is_set():
        try:
            info = await js.consumer_info(s.EVENTS_STREAM, durable)
            pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
            metrics.webhook_pending.labels(settings.name).set(pending)
        except Exception as exc:
            log.debug("webhook %s: consumer info: %s", settings.name, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
