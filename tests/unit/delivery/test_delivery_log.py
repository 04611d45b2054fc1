"""The shared delivery helpers: Postfix's delay format, log line and reply reading."""

from __future__ import annotations

import pytest

from postbus.delivery import Outcome, Stats, _format_usec, format_tv, log_delivery, soften
from postbus.queue.entry import Recipient
from postbus.smtp.reply import Reply, reply_dsn, reply_status


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0"),
        (0.004, "0"),  # below the 10 ms resolution
        (0.005, "0.01"),  # rounds half up
        (0.13, "0.13"),
        (0.0999, "0.1"),  # trailing zero dropped
        (0.04, "0.04"),
        (1.234, "1.2"),  # two significant digits
        (9.96, "10"),
        (12.5, "13"),  # large values round to whole seconds
        (123.4, "123"),
        (86400.2, "86400"),
        (-1.0, "0"),  # clocks that jumped back
    ],
)
def test_format_tv_matches_postfix(seconds: float, text: str) -> None:
    assert format_tv(seconds) == text


def test_format_tv_shortcut_agrees_with_format_tv_c_digit_by_digit() -> None:
    """The default digits below 10 s take a shortcut; it must say what the digit-by-digit
    algorithm says, at every rounding edge (each 5 ms, each 50 ms) and in between."""
    edges = [e + d for e in range(0, 10_000_001, 5000) for d in (-1, 0, 1)]
    for total in [*edges, *range(0, 10_000_001, 997)]:
        if total >= 0:
            assert format_tv(total / 1e6) == _format_usec(total, 2, 2), total


def test_format_tv_with_more_resolution() -> None:
    assert format_tv(0.0042, 2, 3) == "0.004"
    assert format_tv(0.00042, 2, 6) == "0.00042"
    assert format_tv(0.5, 2, 0) == "1"


def _stats(**kw: float) -> Stats:
    base = {"arrival": 1000.0, "active": 1000.04, "handoff": 1000.05}
    base.update(kw)
    return Stats(base["arrival"], base["active"], base["handoff"], base.get("conn_setup_done", 0))


def test_log_line_for_smtp_is_postfix_format() -> None:
    stats = _stats(conn_setup_done=1000.08)
    line = log_delivery(
        "4F2A1C7D3E", Recipient("bob@example.com"), "mx.example.com[192.0.2.1]:25", stats,
        "2.0.0", "sent", "250 2.0.0 Ok: queued as ABC", transport="smtp", now=1000.13,
    )
    assert line == (
        "4F2A1C7D3E: to=<bob@example.com>, relay=mx.example.com[192.0.2.1]:25, "
        "delay=0.13, delays=0.04/0.01/0.03/0.05, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok: queued as ABC)"
    )


def test_log_line_orig_to_local_and_reuse() -> None:
    stats = _stats()
    rcpt = Recipient("bob@example.com", orig_rcpt="postmaster@example.com")
    line = log_delivery(
        "Q1", rcpt, "local", stats, "2.0.0", "sent", "delivered to maildir",
        transport="local", now=1001.5,
    )
    assert line == (
        "Q1: to=<bob@example.com>, orig_to=<postmaster@example.com>, relay=local, "
        "delay=1.5, delays=0.04/0.01/0/1.5, dsn=2.0.0, status=sent (delivered to maildir)"
    )
    same = Recipient("bob@example.com", orig_rcpt="BOB@example.com")
    stats.reuse_count = 2
    line = log_delivery(
        "Q1", same, "h[1.2.3.4]:25", stats, "4.4.2", "deferred", "x", transport="smtp",
        now=1000.2,
    )
    assert "orig_to" not in line
    assert ", relay=h[1.2.3.4]:25, conn_use=3, delay=0.2," in line


@pytest.mark.parametrize(
    ("code", "text", "status", "dsn"),
    [
        (250, "2.0.0 Ok: queued as X", "sent", "2.0.0"),
        (250, "Ok", "sent", "2.0.0"),
        (451, "4.3.0 try again later", "deferred", "4.3.0"),
        (450, "Mailbox busy", "deferred", "4.0.0"),
        (550, "5.1.1 <x@y>: Recipient address rejected", "bounced", "5.1.1"),
        (550, "4.1.1 class mismatch", "bounced", "5.0.0"),
        (554, "no code here", "bounced", "5.0.0"),
        (552, "5.3.4\tMessage too big", "bounced", "5.3.4"),
        (500, "5.5.2x not a code", "bounced", "5.0.0"),
    ],
)
def test_reply_classification(code: int, text: str, status: str, dsn: str) -> None:
    assert reply_status(code) == status
    assert reply_dsn(code, text) == dsn
    reply = Reply(code, text)
    assert (reply.status, reply.dsn) == (status, dsn)


def test_reply_text_joins_lines_as_postfix_logs_it() -> None:
    assert str(Reply(550, "5.7.1 first\nsecond line")) == "550 5.7.1 first second line"


def test_outcome_helpers() -> None:
    assert Outcome.by_dsn("5.4.4", "x").status == "bounced"
    assert Outcome.by_dsn("4.4.1", "x").status == "deferred"
    assert Outcome.from_reply(Reply(250, "2.0.0 Ok")).reason == "250 2.0.0 Ok"
    assert soften("5.7.1") == "4.7.1" and soften("4.1.1") == "4.1.1"


def test_log_delivery_counts_each_outcome_under_its_own_labels() -> None:
    """The labelled metrics are bound once per kind of outcome: each kind still counts
    apart, and a deferral adds no arrival-to-disposition delay."""
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    sent = {"transport": "benchlog", "status": "sent", "dsn_class": "2"}
    deferred = {"transport": "benchlog", "status": "deferred", "dsn_class": "4"}
    before = (sample("postbus_delivery_attempts_total", **sent),
              sample("postbus_delivery_attempts_total", **deferred),
              sample("postbus_delivery_delay_seconds_count", transport="benchlog",
                     status="sent"),
              sample("postbus_delivery_duration_seconds_count", transport="benchlog",
                     stage="transmission"))
    rcpt = Recipient("bob@example.com")
    for _ in range(2):
        log_delivery("4F2A1C7D3E", rcpt, "mx[192.0.2.1]:25", _stats(), "2.0.0", "sent",
                     "250 2.0.0 Ok", transport="benchlog", now=1001.0)
    log_delivery("4F2A1C7D3E", rcpt, "mx[192.0.2.1]:25", _stats(), "4.4.1", "deferred",
                 "connect timed out", transport="benchlog", now=1001.0)
    after = (sample("postbus_delivery_attempts_total", **sent),
             sample("postbus_delivery_attempts_total", **deferred),
             sample("postbus_delivery_delay_seconds_count", transport="benchlog",
                    status="sent"),
             sample("postbus_delivery_duration_seconds_count", transport="benchlog",
                    stage="transmission"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [2.0, 1.0, 2.0, 3.0]
    assert sample("postbus_delivery_delay_seconds_count", transport="benchlog",
                  status="deferred") == 0.0
