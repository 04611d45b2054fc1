"""``bounce_to`` (local's owner- alias for one recipient's notice) is written only when
set, so that results and entries without it stay readable by the version before it."""

from __future__ import annotations

import orjson

from postbus.queue.entry import DeliveryStatus, QueueEntry, RcptResult, Recipient


def test_bounce_to_is_written_only_when_set_and_read_back() -> None:
    plain = DeliveryStatus("Q1", 1, "local", "h", [RcptResult(0, "bounced", "5.1.1", "x")])
    assert b"bounce_to" not in plain.encode()
    assert DeliveryStatus.decode(plain.encode()) == plain
    owned = DeliveryStatus("Q1", 1, "local", "h",
                           [RcptResult(0, "bounced", "5.1.1", "x", bounce_to="o@p.test")])
    assert orjson.loads(owned.encode())["results"][0]["bounce_to"] == "o@p.test"
    assert DeliveryStatus.decode(owned.encode()) == owned


def test_a_result_sets_and_clears_a_recipients_bounce_to() -> None:
    entry = QueueEntry("Q1", "a@b.test", [Recipient("list@p.test", state="active")],
                       attempt_id="A1")
    assert b"bounce_to" not in entry.encode()
    entry.record(DeliveryStatus("Q1", 1, "local", "h", [
        RcptResult(0, "deferred", "4.3.0", "later", bounce_to="")], attempt_id="A1"))
    assert entry.recipients[0].bounce_to == ""
    entry.recipients[0].state = "active"
    entry.record(DeliveryStatus("Q1", 1, "local", "h", [
        RcptResult(0, "bounced", "5.1.1", "x", bounce_to="owner-list@p.test")],
        attempt_id="A1"))
    again = QueueEntry.decode(entry.encode())
    assert (again.recipients[0].state, again.recipients[0].bounce_to) == (
        "bounced", "owner-list@p.test")
