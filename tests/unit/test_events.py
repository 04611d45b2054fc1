"""The event payloads: one typed, versioned JSON per kind, read leniently, built from the queue."""

from __future__ import annotations

import orjson
import pytest

from postbus import events
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient


def test_every_kind_round_trips_with_its_fields() -> None:
    for kind, cls in events.KINDS.items():
        event = events.make(kind, "4BCD1234", time=1700000000.5)
        data = orjson.loads(event.encode())
        assert data["v"] == 1 and data["kind"] == kind and data["queue_id"] == "4BCD1234"
        assert len(data["id"]) == 32
        again = events.decode(event.encode())
        assert type(again) is cls and again == event


def test_the_brief_kinds_and_their_fields() -> None:
    assert set(events.DEFAULT_KINDS) <= set(events.KINDS)
    fields = {kind: set(orjson.loads(events.make(kind, "Q").encode())) for kind in events.KINDS}
    common = {"v", "kind", "id", "queue_id", "time"}
    assert fields["received"] - common == {
        "sender", "recipients", "nrcpt", "size", "client", "helo", "protocol", "message_id"}
    per_rcpt = {"sender", "recipient", "orig_recipient", "transport", "relay", "dsn", "reason",
                "delay", "attempt"}
    for kind in ("delivered", "bounced", "expired"):
        assert fields[kind] - common == per_rcpt
    assert fields["deferred"] - common == per_rcpt | {"next_attempt"}
    for kind in ("held", "released", "requeued", "deleted"):
        assert fields[kind] - common == {"who", "why"}


def test_make_refuses_unknown_kinds_fields_and_types() -> None:
    with pytest.raises(KeyError):
        events.make("exploded", "Q")
    with pytest.raises(TypeError, match="no field colour"):
        events.make("delivered", "Q", colour="red")
    with pytest.raises(TypeError, match="field size"):
        events.make("received", "Q", size="12")
    with pytest.raises(TypeError, match="field attempt"):
        events.make("active", "Q", attempt=True)


def test_decode_ignores_newer_fields_and_refuses_bad_input() -> None:
    raw = orjson.dumps({"v": 1, "kind": "delivered", "id": "x", "queue_id": "Q", "time": 1,
                        "recipient": "bob@example.com", "tls": "TLSv1.3"})
    event = events.decode(raw)
    assert isinstance(event, events.Delivered) and event.recipient == "bob@example.com"
    for bad, text in (
        (b"{", "not JSON"),
        (b'{"v": 2, "kind": "delivered", "queue_id": "Q"}', "version"),
        (b'{"v": 1, "kind": "exploded", "queue_id": "Q"}', "unknown event kind"),
        (b'{"v": 1, "kind": "delivered"}', "no queue_id"),
        (b'{"v": 1, "kind": "delivered", "queue_id": "Q", "delay": "1s"}', "field delay"),
    ):
        with pytest.raises(events.EventError, match=text):
            events.decode(bad)


def test_events_from_the_queue_entry() -> None:
    entry = QueueEntry(
        queue_id="4BCD1234", sender="alice@example.org", arrival_time=1000.0, size=2048,
        recipients=[
            Recipient("bob@example.com", orig_rcpt="b@example.com", state="sent", dsn="2.0.0",
                      reason="250 2.0.0 Ok: queued as 99", relay="mx.example.com[192.0.2.1]:25",
                      transport="smtp:example.com"),
            Recipient("carol@example.net", state="deferred", dsn="4.4.1",
                      reason="connect to mx.example.net[192.0.2.2]:25: Connection refused"),
            Recipient("dave@example.net", state="active"),
        ],
        client_name="client.example.org", client_addr="192.0.2.9", helo="client",
        message_id="<m1@example.org>", attempts=2, next_attempt=1600.0,
    )
    got = events.received(entry)
    assert (got.queue_id, got.sender, got.nrcpt, got.size, got.client, got.message_id) == (
        "4BCD1234", "alice@example.org", 3, 2048, "client.example.org[192.0.2.9]",
        "<m1@example.org>")
    assert got.recipients == ("bob@example.com", "carol@example.net", "dave@example.net")
    sent = events.for_recipient(entry, entry.recipients[0], now=1012.3456)
    assert isinstance(sent, events.Delivered)
    assert (sent.recipient, sent.orig_recipient, sent.relay, sent.dsn, sent.reason) == (
        "bob@example.com", "b@example.com", "mx.example.com[192.0.2.1]:25", "2.0.0",
        "250 2.0.0 Ok: queued as 99")
    assert (sent.delay, sent.attempt, sent.transport, sent.time) == (
        12.346, 2, "smtp:example.com", 1012.3456)
    later = events.for_recipient(entry, entry.recipients[1], now=1013.0)
    assert isinstance(later, events.Deferred) and later.next_attempt == 1600.0
    assert later.reason.startswith("connect to mx.example.net")
    assert events.for_recipient(entry, entry.recipients[2]) is None


def test_stream_limits_come_from_the_parameters() -> None:
    spec = events.stream_spec()
    assert (spec.name, spec.storage.value, spec.max_age, spec.max_bytes, spec.max_msgs) == (
        "POSTBUS_EVENTS", "file", 7 * 86400.0, 1073741824, 10000000)
    cfg = Config.from_text("postbus_events_max_age = 2h\npostbus_events_max_bytes = 0\n"
                           "postbus_events_max_msgs = 500\n")
    spec = events.stream_spec(cfg)
    assert (spec.max_age, spec.max_bytes, spec.max_msgs) == (7200.0, -1, 500)


def test_the_bus_declares_the_file_stream() -> None:
    from postbus.bus.jetstream import STREAMS

    (spec,) = [spec for spec in STREAMS if spec.name == "POSTBUS_EVENTS"]
    assert spec == events.stream_spec()


def test_only_the_recorded_kinds_are_recorded() -> None:
    import asyncio

    assert events.recorded == frozenset(events.KINDS)  # until configured
    try:
        events.configure(Config.from_text("postbus_events_record = delivered, bounced\n"))
        assert events.recorded == {"delivered", "bounced"}
        # left out: not recorded, not a failure, and the bus is not touched (here: none)
        assert asyncio.run(events.publish(None, events.make("active", "Q")))  # type: ignore[arg-type]
        events.configure(Config.from_text("postbus_events_record =\n"))
        assert events.recorded == frozenset()
        with pytest.raises(ConfigError, match="parameter postbus_events_record: unknown event"):
            events.configure(Config.from_text("postbus_events_record = delivered, sent\n"))
        # by default, every kind but the two that only observe the queue's inside
        events.configure(Config.from_text(""))
        assert events.recorded == frozenset(events.KINDS) - {"active", "removed"}
    finally:
        events.recorded = frozenset(events.KINDS)
