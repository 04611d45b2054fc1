"""Every bus name in one place (≈ Postfix mail_proto.h).

The queue is JetStream state:

* ``POSTBUS_QUEUE`` holds every queued message under ``postbus.q.<qid>.>``
  (the queue file): its entry (envelope, per-recipient state, queue name) on
  ``.entry``, changed by compare-and-set and kept once per subject, and its
  content: chunk 0 on ``.msg``, which doubles as the "new mail" trigger the
  qmgr consumes, larger bodies continuing on ``.part.<n>``. Removing a
  message is one purge of ``postbus.q.<qid>.>``.
* ``POSTBUS_DELIVER`` is a work queue of delivery jobs, one subject per
  transport (the master.cf service name), so transport_maps results route
  straight to subjects.
* ``POSTBUS_STATUS`` carries delivery results back to the qmgr.
* ``POSTBUS_DEFER`` holds one wake-up per deferred message; the qmgr naks it
  with a delay until the message's next attempt is due.
* ``POSTBUS_EVENTS`` records every state change, for observers, on
  ``postbus.event.<kind>`` (:mod:`postbus.events`: the kinds and their
  versioned JSON); each webhook reads it through its own durable consumer
  ``webhook-<name>``.
* ``POSTBUS_WEBHOOK_DEAD`` keeps the events a webhook gave up on, on
  ``postbus.webhook.dead.<name>`` (the event as sent, with
  ``Postbus-Webhook-*`` headers: attempts, last error, time).
* ``POSTBUS_CORRUPT`` is the corrupt queue (Postfix's ``corrupt/``): bus
  work that cannot be decoded, or whose handler failed
  ``postbus_bus_retry_limit`` times, is moved there once, on
  ``postbus.corrupt.<id>`` (``<id>`` is the queue ID when the work names
  one, else a fresh one), with its payload, its original headers and
  ``Postbus-Corrupt-*`` headers: reason, kind, original subject and
  stream, time. A queue file (``postbus.q.<qid>.>``) moves there whole.
* ``postbus.maps.changed`` (core NATS, not a stream) announces that a lookup
  table was loaded or edited; the payload is the table's ``type:name``.
  Services drop that table from their lookup cache.
"""

from __future__ import annotations

ROOT = "postbus"

QUEUE_STREAM = "POSTBUS_QUEUE"
DELIVER_STREAM = "POSTBUS_DELIVER"
STATUS_STREAM = "POSTBUS_STATUS"
DEFER_STREAM = "POSTBUS_DEFER"
EVENTS_STREAM = "POSTBUS_EVENTS"
CORRUPT_STREAM = "POSTBUS_CORRUPT"
WEBHOOK_DEAD_STREAM = "POSTBUS_WEBHOOK_DEAD"

QMGR_INCOMING_CONSUMER = "qmgr-incoming"
QMGR_STATUS_CONSUMER = "qmgr-status"
QMGR_DEFER_CONSUMER = "qmgr-defer"

QUEUE_SUBJECTS = f"{ROOT}.q.>"
MSG_TRIGGER_FILTER = f"{ROOT}.q.*.msg"
ENTRY_FILTER = f"{ROOT}.q.*.entry"
CORRUPT_SUBJECTS = f"{ROOT}.corrupt.*"
EVENT_SUBJECTS = f"{ROOT}.event.*"
WEBHOOK_DEAD_SUBJECTS = f"{ROOT}.webhook.dead.*"

#: Core NATS subject of table-change events; payload: the table spec, UTF-8.
MAPS_CHANGED_SUBJECT = f"{ROOT}.maps.changed"


def entry_subject(queue_id: str) -> str:
    """A message's queue entry (the latest version only)."""
    return f"{ROOT}.q.{queue_id}.entry"


def msg_subject(queue_id: str) -> str:
    """Chunk 0 of a message's content: also the qmgr's new-mail trigger."""
    return f"{ROOT}.q.{queue_id}.msg"


def part_subject(queue_id: str, index: int) -> str:
    """Continuation chunk ``index`` (1-based) of a large message."""
    return f"{ROOT}.q.{queue_id}.part.{index}"


def message_filter(queue_id: str) -> str:
    """Everything stored for one message, for removing it in one purge."""
    return f"{ROOT}.q.{queue_id}.>"


def queue_id_of(subject: str) -> str:
    """``postbus.q.<qid>.msg`` -> ``<qid>``."""
    return subject.split(".")[2]


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


def webhook_consumer(name: str) -> str:
    """The durable consumer of the events stream that feeds webhook ``name``."""
    return f"webhook-{name}"


def webhook_dead_subject(name: str) -> str:
    """Where webhook ``name`` leaves the events it gave up on."""
    return f"{ROOT}.webhook.dead.{name}"


def corrupt_subject(record_id: str) -> str:
    """Where the corrupt queue keeps what was moved under ``record_id``."""
    return f"{ROOT}.corrupt.{record_id}"


def subject_queue_id(subject: str) -> str:
    """The queue ID a subject names (queue file, status, wake-up, corrupt); '' if none."""
    parts = subject.split(".")
    if len(parts) >= 4 and parts[:2] == [ROOT, "q"]:
        return parts[2]
    if len(parts) == 3 and parts[0] == ROOT and parts[1] in ("status", "defer", "corrupt"):
        return parts[2]
    return ""
