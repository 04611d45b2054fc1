"""The consumer's retry delays and how bus subjects name their work."""

from __future__ import annotations

import pytest

from postbus.bus import subjects as s
from postbus.bus.consumer import retry_delay
from postbus.queue.corrupt import kind_of


@pytest.mark.parametrize(("deliveries", "delay"), [
    (0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10_000, 60.0),
])
def test_retry_delay_doubles_up_to_the_limit(deliveries: int, delay: float) -> None:
    assert retry_delay(deliveries, 60.0) == delay


@pytest.mark.parametrize(("subject", "kind", "qid"), [
    ("postbus.q.t.123.4F2A1C7D3E1.msg", "message", "4F2A1C7D3E1"),
    ("postbus.q.d.0.4F2A1C7D3E1.part.3", "message", "4F2A1C7D3E1"),
    ("postbus.status.4F2A1C7D3E1", "status", "4F2A1C7D3E1"),
    ("postbus.wake.4F2A1C7D3E1", "wakeup", "4F2A1C7D3E1"),
    ("postbus.deliver.smtp.4F2A1C7D3E1", "job", "4F2A1C7D3E1"),
    ("postbus.deliver.smtp", "job", ""),
    ("postbus.corrupt.4F2A1C7D3E1", "other", "4F2A1C7D3E1"),
    ("elsewhere.status.x", "other", ""),
])
def test_subjects_name_their_kind_and_queue_id(subject: str, kind: str, qid: str) -> None:
    assert kind_of(subject) == kind
    assert s.subject_queue_id(subject) == qid
