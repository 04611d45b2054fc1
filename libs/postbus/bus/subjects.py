"""Every bus name in one place (≈ Postfix mail_proto.h).

The queue is JetStream state:

* ``POSTBUS_MSG`` holds each message's content (the queue file). Chunk 0 is
  published on ``postbus.msg.<qid>`` and doubles as the "new mail" trigger
  the qmgr consumes; larger bodies continue on ``postbus.part.<qid>.<n>``.
* the ``POSTBUS_QUEUE`` key/value bucket holds one queue entry per message
  (envelope, per-recipient state, queue name), keyed by queue ID.
* ``POSTBUS_DELIVER`` is a work queue of delivery jobs, one subject per
  transport (the master.cf service name), so transport_maps results route
  straight to subjects.
* ``POSTBUS_STATUS`` carries delivery results back to the qmgr.
* ``POSTBUS_DEFER`` holds one wake-up per deferred message; the qmgr naks it
  with a delay until the message's next attempt is due.
* ``POSTBUS_EVENTS`` records every state change, for observers.
* ``postbus.maps.changed`` (core NATS, not a stream) announces that a lookup
  table was loaded or edited; the payload is the table's ``type:name``.
  Services drop that table from their lookup cache.
"""

from __future__ import annotations

ROOT = "postbus"

MSG_STREAM = "POSTBUS_MSG"
QUEUE_BUCKET = "POSTBUS_QUEUE"
DELIVER_STREAM = "POSTBUS_DELIVER"
STATUS_STREAM = "POSTBUS_STATUS"
DEFER_STREAM = "POSTBUS_DEFER"
EVENTS_STREAM = "POSTBUS_EVENTS"

QMGR_INCOMING_CONSUMER = "qmgr-incoming"
QMGR_STATUS_CONSUMER = "qmgr-status"
QMGR_DEFER_CONSUMER = "qmgr-defer"

MSG_TRIGGER_FILTER = f"{ROOT}.msg.*"

#: Core NATS subject of table-change events; payload: the table spec, UTF-8.
MAPS_CHANGED_SUBJECT = f"{ROOT}.maps.changed"


def msg_subject(queue_id: str) -> str:
    """Chunk 0 of a message's content: also the qmgr's new-mail trigger."""
    return f"{ROOT}.msg.{queue_id}"


def part_subject(queue_id: str, index: int) -> str:
    """Continuation chunk ``index`` (1-based) of a large message."""
    return f"{ROOT}.part.{queue_id}.{index}"


def parts_filter(queue_id: str) -> str:
    """Wildcard matching every continuation chunk of one message, for purging."""
    return f"{ROOT}.part.{queue_id}.*"


def deliver_subject(transport: str) -> str:
    return f"{ROOT}.deliver.{transport}"


def deliver_consumer(transport: str) -> str:
    return f"deliver-{transport}"


def status_subject(queue_id: str) -> str:
    return f"{ROOT}.status.{queue_id}"


def defer_subject(queue_id: str) -> str:
    return f"{ROOT}.defer.{queue_id}"


def event_subject(kind: str) -> str:
    return f"{ROOT}.event.{kind}"
