"""Every bus name in one place (≈ Postfix mail_proto.h).

What is queued lives in files, what is in flight in memory:

* ``POSTBUS_QUEUE`` (file, fsynced) holds every queued message under
  ``postbus.q.<bucket>.<qid>.>`` (the queue file). The bucket is where the
  file lives: new mail goes to the time bucket of its arrival,
  ``t.<n>`` (``n``: the arrival time over :data:`BUCKET_SECONDS`), and
  moves to the long-lived ``d.0`` when it is deferred. Chunk 0 of the
  content is on ``.msg``, which carries the entry as it was received and,
  in a time bucket, doubles as the "new mail" trigger the qmgr consumes;
  larger bodies continue on ``.part.<n>``; ``.entry`` holds the entry once
  the qmgr has had to write it (deferred, held, partly delivered), changed
  by compare-and-set and kept once per subject; ``.timer`` is the
  message's one timer, a JetStream message schedule that fires on
  ``postbus.wake.<qid>`` when a deferred message is due.
  A message in a time bucket is removed by a mark on its ``.entry`` (header
  ``Postbus-Gone: done``; a message moved to ``d.0`` leaves ``moved``),
  written for many messages in one atomic batch; the bucket goes in one
  purge once every message in it is marked (:mod:`postbus.queue.buckets`).
  A message in ``d.0`` is removed by one purge of its own subjects.
  Readers that know only the queue ID look it up across buckets
  (``postbus.q.*.*.<qid>.entry``: the last one written wins).
* ``POSTBUS_WORK`` (memory) carries work in flight: delivery jobs on
  ``postbus.deliver.<transport>`` (the master.cf service name, so
  transport_maps results route straight to subjects; the queue ID follows)
  and delivery results on ``postbus.status.<qid>``. A job whose destination
  has no free slot in its concurrency window waits on
  ``postbus.wait.<transport>.<destination key>.<qid>`` until an agent that
  frees a slot moves it on (:mod:`postbus.schedule.gate`). A lost job or
  result costs a retry, never a message: the trigger (or wake-up) that
  started an attempt stays pending on its durable consumer until the attempt is recorded; every
  ``postbus_delivery_lease`` JetStream hands it back to a qmgr, which keeps
  the attempt while a job or result of the message is still on the bus,
  and takes it up anew when none is.
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
  stream, time. A queue file (``postbus.q.<bucket>.<qid>.>``) moves there whole.
* ``postbus.cmd.<verb>`` (core NATS request/reply, not a stream): queue
  commands the qmgr carries out, answered by one qmgr replica (queue group
  ``qmgr``): ``flush`` (postqueue -f), ``send_file`` (-i), ``send_site``
  (-s, and smtpd's ETRN); see :mod:`postbus.queue.commands`.
* ``POSTBUS_GAUGES`` (memory, counters): the deferred and hold queue sizes,
  ``postbus.gauge.<queue>``, moved with ``Nats-Incr`` as entries change
  queue; see :mod:`postbus.queue.gauges`.
* ``postbus.slot.<transport>.<agent>`` (core NATS, not a stream): a slot
  freed in one agent was given to a job waiting in ``agent`` (its ticket was
  the oldest; :mod:`postbus.schedule.gate`). A lost one costs a wait: the
  job finds its slot when it stops waiting.
* ``postbus.maps.changed`` (core NATS, not a stream) announces that a lookup
  table was loaded or edited; the payload is the table's ``type:name``.
  Services drop that table from their lookup cache.
"""

from __future__ import annotations

from nats.errors import BadSubjectError

ROOT = "postbus"

QUEUE_STREAM = "POSTBUS_QUEUE"
WORK_STREAM = "POSTBUS_WORK"
EVENTS_STREAM = "POSTBUS_EVENTS"
CORRUPT_STREAM = "POSTBUS_CORRUPT"
#: Streams of Postbus releases before the queue core of issue #9, removed at start.
RETIRED_STREAMS = ("POSTBUS_DELIVER", "POSTBUS_STATUS", "POSTBUS_DEFER")
WEBHOOK_DEAD_STREAM = "POSTBUS_WEBHOOK_DEAD"
GAUGES_STREAM = "POSTBUS_GAUGES"

QMGR_INCOMING_CONSUMER = "qmgr-incoming"
QMGR_STATUS_CONSUMER = "qmgr-status"
QMGR_WAKE_CONSUMER = "qmgr-wake"

QUEUE_SUBJECTS = f"{ROOT}.q.>"
WAKE_SUBJECTS = f"{ROOT}.wake.*"
DELIVER_SUBJECTS = f"{ROOT}.deliver.*.*"
WAIT_SUBJECTS = f"{ROOT}.wait.*.*.*"
STATUS_SUBJECTS = f"{ROOT}.status.*"
#: New mail: chunk 0 of a message in a time bucket (a message moved to ``d.0`` is not new).
MSG_TRIGGER_FILTER = f"{ROOT}.q.t.*.*.msg"
MSG_FILTER = f"{ROOT}.q.*.*.*.msg"
ENTRY_FILTER = f"{ROOT}.q.*.*.*.entry"
TIMER_FILTER = f"{ROOT}.q.*.*.*.timer"
#: The oldest time bucket on disk is where the first message on this filter lives.
TIME_BUCKETS = f"{ROOT}.q.t.>"
CORRUPT_SUBJECTS = f"{ROOT}.corrupt.*"
EVENT_SUBJECTS = f"{ROOT}.event.*"
WEBHOOK_DEAD_SUBJECTS = f"{ROOT}.webhook.dead.*"
GAUGE_SUBJECTS = f"{ROOT}.gauge.*"
COMMAND_SUBJECTS = f"{ROOT}.cmd.*"
#: The queue group of the qmgr replicas serving queue commands.
COMMAND_GROUP = "qmgr"

#: Core NATS subject of table-change events; payload: the table spec, UTF-8.
MAPS_CHANGED_SUBJECT = f"{ROOT}.maps.changed"


#: Seconds of arrivals that share a time bucket (and its one purge).
BUCKET_SECONDS = 4
#: Where mail that outlives its time bucket (deferred) lives until it is removed.
LONG_BUCKET = "d.0"


def time_bucket(now: float) -> str:
    """The time bucket of mail arriving at ``now``."""
    return f"t.{int(now // BUCKET_SECONDS)}"


def bucket_number(bucket: str) -> int:
    """``t.<n>`` -> n; -1 for ``d.0`` (or anything that is not a time bucket)."""
    area, _, number = bucket.partition(".")
    return int(number) if area == "t" and number.isdigit() else -1


def entry_subject(queue_id: str, bucket: str) -> str:
    """A message's queue entry (the latest version only)."""
    return f"{ROOT}.q.{bucket}.{queue_id}.entry"


def msg_subject(queue_id: str, bucket: str) -> str:
    """Chunk 0 of a message's content: also the qmgr's new-mail trigger."""
    return f"{ROOT}.q.{bucket}.{queue_id}.msg"


def part_subject(queue_id: str, bucket: str, index: int) -> str:
    """Continuation chunk ``index`` (1-based) of a large message."""
    return f"{ROOT}.q.{bucket}.{queue_id}.part.{index}"


def timer_subject(queue_id: str, bucket: str) -> str:
    """The message's one timer (a JetStream message schedule)."""
    return f"{ROOT}.q.{bucket}.{queue_id}.timer"


def _token(queue_id: str) -> str:
    """A queue ID as one subject token: a filter built from anything else would
    match other subjects, or none, where a publish would have failed."""
    if not queue_id or any(c in queue_id for c in " \t\r\n.*>"):
        raise BadSubjectError(f"not a queue ID: {queue_id!r}")
    return queue_id


def find_entry(queue_id: str) -> str:
    """A message's entries in every bucket (the last written is the current one)."""
    return f"{ROOT}.q.*.*.{_token(queue_id)}.entry"


def find_msg(queue_id: str) -> str:
    return f"{ROOT}.q.*.*.{_token(queue_id)}.msg"


def find_part(queue_id: str, index: int) -> str:
    return f"{ROOT}.q.*.*.{_token(queue_id)}.part.{index}"


def message_filter(queue_id: str) -> str:
    """Everything stored for one message, in any bucket, for removing it in one purge."""
    return f"{ROOT}.q.*.*.{_token(queue_id)}.>"


def bucket_filter(bucket: str) -> str:
    """Everything in one bucket (its purge)."""
    return f"{ROOT}.q.{bucket}.>"


def queue_id_of(subject: str) -> str:
    """``postbus.q.<bucket>.<qid>.msg`` -> ``<qid>``."""
    return subject.split(".")[4]


def bucket_of(subject: str) -> str:
    """``postbus.q.<bucket>.<qid>.msg`` -> ``<bucket>`` (two tokens)."""
    parts = subject.split(".")
    return f"{parts[2]}.{parts[3]}"


def deliver_subject(transport: str, queue_id: str) -> str:
    """A delivery job: per transport (which agents take it), per message (so the
    qmgr can tell whether an attempt's jobs are still on the bus)."""
    return f"{ROOT}.deliver.{transport}.{queue_id}"


def deliver_filter(transport: str) -> str:
    """Every job of one transport (a delivery agent's consumer)."""
    return f"{ROOT}.deliver.{transport}.*"


def deliver_consumer(transport: str) -> str:
    return f"deliver-{transport}"


def wait_subject(transport: str, key: str, queue_id: str) -> str:
    """A job waiting for a slot at its destination (``key`` names the destination)."""
    return f"{ROOT}.wait.{transport}.{key}.{queue_id}"


def wait_filter(transport: str, key: str) -> str:
    """Every job waiting for one destination, oldest first."""
    return f"{ROOT}.wait.{transport}.{key}.*"


def slot_subject(transport: str, agent: str) -> str:
    """Core NATS, not a stream: a slot freed in one agent was given to a job waiting
    in ``agent`` (payload: the destination and the job's slot member)."""
    return f"{ROOT}.slot.{transport}.{agent}"


def status_subject(queue_id: str) -> str:
    return f"{ROOT}.status.{queue_id}"


def wake_subject(queue_id: str) -> str:
    """Where a message's timer fires."""
    return f"{ROOT}.wake.{queue_id}"


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


def command_subject(verb: str) -> str:
    """A queue command the qmgr carries out (request/reply)."""
    return f"{ROOT}.cmd.{verb}"


def gauge_subject(name: str) -> str:
    """A shared counter (``Nats-Incr``): a queue's size, or the recount claims."""
    return f"{ROOT}.gauge.{name}"


def subject_queue_id(subject: str) -> str:
    """The queue ID a subject names (queue file, status, wake-up, corrupt); '' if none."""
    parts = subject.split(".")
    if len(parts) >= 6 and parts[:2] == [ROOT, "q"]:
        return parts[4]
    if len(parts) == 3 and parts[0] == ROOT and parts[1] in ("status", "wake", "corrupt"):
        return parts[2]
    if len(parts) == 4 and parts[:2] == [ROOT, "deliver"]:
        return parts[3]
    return ""
