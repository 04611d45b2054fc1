"""Who gets which notice: NOTIFY, RET, the null and double-bounce senders,
notify_classes, the delay warning's time (≈ bounce(8)'s notify, warn and
trace services, read in bounce_notify_service.c and friends)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from qmgr.bouncer import Bouncer, row_for
from qmgr.notices import (
    Plan,
    Policy,
    default_action,
    delay_due,
    plan_delay,
    plan_failure,
    plan_success,
    wants,
)

BASE = {
    "compatibility_level": "3.6",
    "myhostname": "mx.postbus.test",
    "mydomain": "postbus.test",
}
DOUBLE = "double-bounce@mx.postbus.test"
ALL_CLASSES = "bounce, 2bounce, delay, resource, software"


def config(**settings: str) -> Config:
    merged = {**BASE, **settings}
    return Config.from_text("".join(f"{k} = {v}\n" for k, v in merged.items()))


def policy(classes: str = "resource, software") -> Policy:
    return Policy.from_config(config(notify_classes=classes))


def rcpt(address: str, notify: str = "", state: str = "bounced") -> Recipient:
    return Recipient(address, orig_rcpt=address, notify=notify, state=state,  # type: ignore[arg-type]
                     dsn="5.1.1", reason="User unknown")


def summary(plans: list[Plan]) -> list[tuple[str, bool, str, str, list[str], bool, str]]:
    return [(p.kind, p.postmaster, p.sender, p.to, [r.address for r, _ in p.rows],
             p.headers_only, p.what) for p in plans]


# -- NOTIFY -----------------------------------------------------------------------------

@pytest.mark.parametrize(("notify", "failure", "delay", "success"), [
    ("", True, True, False),  # no NOTIFY: failures and delays, as Postfix's default
    ("NEVER", False, False, False),
    ("FAILURE", True, False, False),
    ("DELAY", False, True, False),
    ("SUCCESS", False, False, True),
    ("SUCCESS,FAILURE", True, False, True),
    ("SUCCESS,DELAY,FAILURE", True, True, True),
    ("failure,delay", True, True, False),
])
def test_notify_words(notify: str, failure: bool, delay: bool, success: bool) -> None:
    r = rcpt("a@remote.test", notify)
    assert (wants(r, "FAILURE"), wants(r, "DELAY"), wants(r, "SUCCESS")) == (
        failure, delay, success)


# -- failure ----------------------------------------------------------------------------

SENDER_NDR = "sender non-delivery notification"
PM_NDR = "postmaster non-delivery notification"
MIXED = [("a@r.test", ""), ("b@r.test", "FAILURE"), ("c@r.test", "NEVER"),
         ("d@r.test", "DELAY"), ("e@r.test", "SUCCESS,FAILURE")]

FAILURE_CASES = [
    # (sender, ret, notify_classes, expected plans)
    ("alice@client.test", "", "resource, software", [
        ("failure", False, "", "alice@client.test", ["a@r.test", "b@r.test", "e@r.test"], False,
         SENDER_NDR)]),
    ("alice@client.test", "HDRS", "resource, software", [
        ("failure", False, "", "alice@client.test", ["a@r.test", "b@r.test", "e@r.test"], True,
         SENDER_NDR)]),
    ("alice@client.test", "FULL", "bounce", [
        ("failure", False, "", "alice@client.test", ["a@r.test", "b@r.test", "e@r.test"], False,
         SENDER_NDR),
        # the postmaster copy names every recipient (NOTIFY=NEVER too), headers only
        ("failure", True, DOUBLE, "postmaster@mx.postbus.test",
         ["a@r.test", "b@r.test", "c@r.test", "d@r.test", "e@r.test"], True, PM_NDR)]),
    # 2bounce alone sends no copy of single bounces
    ("alice@client.test", "", "2bounce", [
        ("failure", False, "", "alice@client.test", ["a@r.test", "b@r.test", "e@r.test"], False,
         SENDER_NDR)]),
    # a bounce that bounces: to 2bounce_notice_recipient with the whole message, or to no one
    ("", "", "resource, software", []),
    ("", "HDRS", "2bounce", [
        ("failure", True, DOUBLE, "postmaster@mx.postbus.test",
         ["a@r.test", "b@r.test", "c@r.test", "d@r.test", "e@r.test"], False, PM_NDR)]),
    ("", "", "bounce", [
        ("failure", True, DOUBLE, "postmaster@mx.postbus.test",
         ["a@r.test", "b@r.test", "c@r.test", "d@r.test", "e@r.test"], False, PM_NDR)]),
    # an undeliverable postmaster notice: never a triple bounce
    (DOUBLE, "", ALL_CLASSES, []),
    ("Double-Bounce@MX.postbus.test", "", ALL_CLASSES, []),
]


@pytest.mark.parametrize(("sender", "ret", "classes", "expected"), FAILURE_CASES)
def test_failure_plans(sender: str, ret: str, classes: str, expected: list[object]) -> None:
    entry = QueueEntry("Q1", sender, [rcpt(a, n) for a, n in MIXED], ret=ret)
    assert summary(plan_failure(policy(classes), entry, entry.recipients)) == expected


def test_failure_with_only_never_recipients_still_copies_postmaster() -> None:
    entry = QueueEntry("Q1", "alice@client.test", [rcpt("a@r.test", "NEVER")])
    assert summary(plan_failure(policy("bounce"), entry, entry.recipients)) == [
        ("failure", True, DOUBLE, "postmaster@mx.postbus.test", ["a@r.test"], True, PM_NDR)]
    assert plan_failure(policy(), entry, entry.recipients) == []


def test_notice_recipients_come_from_their_parameters_qualified() -> None:
    pol = Policy.from_config(config(
        notify_classes=ALL_CLASSES, bounce_notice_recipient="bounces",
        **{"2bounce_notice_recipient": "double@admin.test"},
        delay_notice_recipient="delays", myorigin="postbus.test",
        double_bounce_sender="nobounce"))
    assert (pol.bounce_rcpt, pol.twobounce_rcpt, pol.delay_rcpt, pol.double_bounce) == (
        "bounces@postbus.test", "double@admin.test", "delays@postbus.test",
        "nobounce@mx.postbus.test")
    entry = QueueEntry("Q1", "", [rcpt("a@r.test")])
    assert summary(plan_failure(pol, entry, entry.recipients))[0][2:4] == (
        "nobounce@mx.postbus.test", "double@admin.test")


# -- delay ------------------------------------------------------------------------------

SENDER_DELAY = "sender delay notification"
PM_DELAY = "postmaster delay notification"


@pytest.mark.parametrize(("sender", "classes", "expected"), [
    ("alice@client.test", "resource, software", [
        ("delay", False, "", "alice@client.test", ["a@r.test", "d@r.test"], True, SENDER_DELAY)]),
    ("alice@client.test", "delay", [
        ("delay", False, "", "alice@client.test", ["a@r.test", "d@r.test"], True, SENDER_DELAY),
        ("delay", True, DOUBLE, "postmaster@mx.postbus.test",
         ["a@r.test", "b@r.test", "c@r.test", "d@r.test", "e@r.test"], True, PM_DELAY)]),
    ("", "resource, software", []),
    ("", "delay", [
        ("delay", True, DOUBLE, "postmaster@mx.postbus.test",
         ["a@r.test", "b@r.test", "c@r.test", "d@r.test", "e@r.test"], False, PM_DELAY)]),
    (DOUBLE, ALL_CLASSES, []),
])
def test_delay_plans(sender: str, classes: str, expected: list[object]) -> None:
    entry = QueueEntry("Q1", sender, [rcpt(a, n, "deferred") for a, n in MIXED])
    assert summary(plan_delay(policy(classes), entry, entry.recipients)) == expected


NOW = 1_800_000_000.0


@pytest.mark.parametrize(("warning_time", "sender", "age", "warned", "due"), [
    ("0h", "alice@client.test", 10 * 86400, False, False),  # Postfix's default: no warnings
    ("4h", "alice@client.test", 4 * 3600, False, True),
    ("4h", "alice@client.test", 4 * 3600 - 1, False, True),  # the qmgr's one-second slack
    ("4h", "alice@client.test", 4 * 3600 - 2, False, False),
    ("4h", "alice@client.test", 5 * 3600, True, False),  # once per message
    ("4h", "", 5 * 3600, False, False),  # cleanup sets no warning time for the null sender
    ("30m", "alice@client.test", 1800, False, True),
])
def test_delay_due(warning_time: str, sender: str, age: int, warned: bool, due: bool) -> None:
    entry = QueueEntry("Q1", sender, [rcpt("a@r.test", state="deferred")],
                       arrival_time=NOW - age, warned=warned)
    assert delay_due(config(delay_warning_time=warning_time), entry, NOW) is due


# -- success ----------------------------------------------------------------------------

SUCCESS_WHAT = "sender delivery status notification"


@pytest.mark.parametrize(("sender", "classes", "expected"), [
    ("alice@client.test", "resource, software", [
        ("success", False, "", "alice@client.test", ["d@r.test", "e@r.test"], True,
         SUCCESS_WHAT)]),
    ("", "resource, software", []),
    ("", "2bounce", [
        ("success", False, DOUBLE, "postmaster@mx.postbus.test", ["d@r.test", "e@r.test"], True,
         SUCCESS_WHAT)]),
    (DOUBLE, ALL_CLASSES, []),
])
def test_success_plans(sender: str, classes: str, expected: list[object]) -> None:
    rcpts = [rcpt(a, n, "sent") for a, n in
             [("a@r.test", ""), ("c@r.test", "NEVER"), ("d@r.test", "SUCCESS"),
              ("e@r.test", "SUCCESS,FAILURE")]]
    entry = QueueEntry("Q1", sender, rcpts)
    plans = plan_success(policy(classes), entry, [(r, "relayed") for r in rcpts])
    assert summary(plans) == expected
    assert all(action == "relayed" for p in plans for _, action in p.rows)


@pytest.mark.parametrize(("relay", "action"), [
    ("mx.remote.test[192.0.2.1]:25", "relayed"),
    ("127.0.0.1[127.0.0.1]:24", "relayed"),  # lmtp_assume_final = no
    ("local", "delivered"),
    ("virtual", "delivered"),
])
def test_default_action(relay: str, action: str) -> None:
    assert default_action(Recipient("a@r.test", relay=relay)) == action


# -- what a recipient's lines say -------------------------------------------------------

SAID = ("host mx.remote.test[192.0.2.1] said: 550 5.1.1 <a@r.test>: Recipient address rejected"
        " (in reply to RCPT TO command)")


@pytest.mark.parametrize(("fields", "kind", "expected"), [
    # a peer's reply: Remote-MTA and an smtp diagnostic, the reason as logged
    ({"reason": SAID, "dsn": "5.1.1", "relay": "mx.remote.test[192.0.2.1]:25"}, "failure",
     ("failed", "5.1.1", SAID, "", "rfc822;a@r.test", "mx.remote.test", "smtp",
      "550 5.1.1 <a@r.test>: Recipient address rejected")),
    ({"reason": "host mx.remote.test[192.0.2.1] refused to talk to me: 554 5.7.1 go away",
      "dsn": "5.7.1"}, "failure",
     ("failed", "5.7.1", "host mx.remote.test[192.0.2.1] refused to talk to me: 554 5.7.1 go away",
      "", "rfc822;a@r.test", "mx.remote.test", "smtp", "554 5.7.1 go away")),
    # no reply from a peer: no Remote-MTA, an X-Postbus diagnostic of the reason
    ({"reason": "connect to mx.remote.test[192.0.2.1]:25: Connection refused", "dsn": "4.4.1",
      "relay": "none"}, "delay",
     ("delayed", "4.4.1", "connect to mx.remote.test[192.0.2.1]:25: Connection refused", "",
      "rfc822;a@r.test", "", "", "")),
    # defaults for a missing status and reason, control characters masked
    ({"reason": "", "dsn": ""}, "failure",
     ("failed", "5.0.0", "(description unavailable)", "", "rfc822;a@r.test", "", "", "")),
    ({"reason": "bad\r\nthing\x00", "dsn": ""}, "delay",
     ("delayed", "4.0.0", "bad??thing?", "", "rfc822;a@r.test", "", "", "")),
    # a rewritten recipient: expanded from its original address
    ({"address": "final@r.test", "orig_rcpt": "alias@r.test", "reason": "User unknown",
      "dsn": "5.1.1"}, "failure",
     ("failed", "5.1.1", "User unknown", "alias@r.test", "rfc822;alias@r.test", "", "", "")),
    # the same address in other case is not an expansion
    ({"orig_rcpt": "A@R.TEST", "reason": "x", "dsn": "5.1.1"}, "failure",
     ("failed", "5.1.1", "x", "", "rfc822;A@R.TEST", "", "", "")),
    # successes: delivery via the relay; an smtp diagnostic when a peer said it
    ({"reason": "250 2.0.0 Ok: queued as X1", "dsn": "2.0.0",
      "relay": "mx.remote.test[192.0.2.1]:25", "state": "sent"}, "success",
     ("relayed", "2.0.0", "delivery via mx.remote.test[192.0.2.1]:25: 250 2.0.0 Ok: queued as X1",
      "", "rfc822;a@r.test", "mx.remote.test", "smtp", "250 2.0.0 Ok: queued as X1")),
    ({"reason": "delivered to mailbox", "dsn": "2.0.0", "relay": "local", "state": "sent"},
     "success",
     ("relayed", "2.0.0", "delivery via local: delivered to mailbox", "", "rfc822;a@r.test",
      "", "", "")),
    ({"reason": "delivered to mailbox", "dsn": "", "relay": "none", "state": "sent"}, "success",
     ("relayed", "2.0.0", "delivered to mailbox", "", "rfc822;a@r.test", "", "", "")),
])
def test_row_for(fields: dict[str, str], kind: str, expected: tuple[str, ...]) -> None:
    r = Recipient(**{"address": "a@r.test", "orig_rcpt": "a@r.test", **fields})  # type: ignore[arg-type]
    action = {"failure": "failed", "delay": "delayed"}.get(kind, "relayed")
    row = row_for(r, action, kind)  # type: ignore[arg-type]
    assert (row.action, row.status, row.reason, row.orig_addr, row.dsn_orcpt, row.mta,
            row.dtype, row.dtext) == expected


def test_row_quotes_local_parts_and_omits_a_missing_orcpt() -> None:
    row = row_for(Recipient("a b@r.test", reason="x"), "failed", "failure")
    assert (row.address, row.dsn_orcpt, row.orig_addr) == ('"a b"@r.test', "", "")


# -- the Bouncer: queueing, logging, the content read once -------------------------------

class Capture:
    """A queue stand-in that records what the Bouncer queues (the queue itself is
    the integration tests' business)."""

    def __init__(self) -> None:
        self.queued: list[tuple[QueueEntry, bytes]] = []
        self.reads = 0

    async def enqueue(self, entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        new_id = f"N{len(self.queued) + 1}"
        self.queued.append((entry, build(new_id)))
        return new_id

    async def content(self, entry: QueueEntry) -> bytes:
        self.reads += 1
        return b"Subject: hi\r\n\r\nbody\r\n"


def bouncer(capture: Capture, **settings: str) -> Bouncer:
    cfg = config(**settings)
    return Bouncer(lambda: cfg, capture.enqueue, capture.content, clock=lambda: NOW)


def test_bouncer_queues_and_logs_each_notice(caplog: pytest.LogCaptureFixture) -> None:
    capture = Capture()
    entry = QueueEntry("Q1", "alice@client.test", [rcpt("a@r.test"), rcpt("b@r.test", "NEVER")])
    with caplog.at_level(logging.INFO):
        ids = asyncio.run(bouncer(capture, notify_classes="bounce").failure(entry))
    assert ids == ["N1", "N2"] and capture.reads == 1
    (ndr, ndr_text), (copy, copy_text) = capture.queued
    assert (ndr.sender, [r.address for r in ndr.recipients], ndr.bounce_of) == (
        "", ["alice@client.test"], "Q1")
    assert (copy.sender, [r.address for r in copy.recipients]) == (
        DOUBLE, ["postmaster@mx.postbus.test"])
    assert ndr.message_id == "<20270115080000.N1@mx.postbus.test>"
    assert b"Message-Id: <20270115080000.N1@mx.postbus.test>\r\n" in ndr_text
    assert b"b@r.test" not in ndr_text and b"<b@r.test>: User unknown" in copy_text
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "N1: message-id=<20270115080000.N1@mx.postbus.test>",
        "Q1: sender non-delivery notification: N1",
        "N2: message-id=<20270115080000.N2@mx.postbus.test>",
        "Q1: postmaster non-delivery notification: N2",
    ]
    assert [r.name for r in caplog.records] == ["postbus.cleanup", "postbus.bounce"] * 2


def test_bouncer_drops_notices_about_postmaster_notices(caplog: pytest.LogCaptureFixture) -> None:
    capture = Capture()
    entry = QueueEntry("Q1", DOUBLE, [rcpt("a@r.test"), rcpt("b@r.test", "SUCCESS", "sent")])
    b = bouncer(capture, notify_classes=ALL_CLASSES)
    with caplog.at_level(logging.INFO):
        assert asyncio.run(b.failure(entry)) == []
        assert asyncio.run(b.delay(entry, [entry.recipients[0]])) == []
        assert asyncio.run(b.success(entry, [(entry.recipients[1], "relayed")])) == []
    assert capture.queued == [] and capture.reads == 0
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Q1: undeliverable postmaster notification discarded"),
        ("WARNING", "Q1: undeliverable postmaster notification discarded"),
        ("INFO", "Q1: not sending trace/success notification for double-bounce message"),
    ]


def test_bouncer_sends_no_success_notice_about_a_bounce_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture = Capture()
    entry = QueueEntry("Q1", "", [rcpt("a@r.test", "SUCCESS", "sent")])
    with caplog.at_level(logging.INFO):
        sent = [(entry.recipients[0], "relayed")]
        assert asyncio.run(bouncer(capture).success(entry, sent)) == []
    assert capture.queued == []
    assert caplog.records[0].getMessage() == (
        "Q1: not sending trace/success notification for single-bounce message")


def test_bouncer_defaults_to_the_failed_or_deferred_recipients() -> None:
    capture = Capture()
    entry = QueueEntry("Q1", "alice@client.test", [
        rcpt("a@r.test", state="bounced"), rcpt("b@r.test", state="expired"),
        rcpt("c@r.test", state="sent"), rcpt("d@r.test", state="deferred")])
    b = bouncer(capture)
    asyncio.run(b.failure(entry))
    asyncio.run(b.delay(entry))
    failure, delay = (text for _, text in capture.queued)
    assert b"<a@r.test>" in failure and b"<b@r.test>" in failure
    assert b"<c@r.test>" not in failure and b"<d@r.test>" not in failure
    assert b"<d@r.test>" in delay and b"<a@r.test>" not in delay
    assert asyncio.run(b.failure(entry, [])) == [] and len(capture.queued) == 2


def test_bouncer_reads_the_configuration_in_force() -> None:
    capture = Capture()
    configs = [config(), config(notify_classes="bounce")]
    b = Bouncer(lambda: configs[0], capture.enqueue, capture.content, clock=lambda: NOW)
    entry = QueueEntry("Q1", "alice@client.test", [rcpt("a@r.test")])
    assert asyncio.run(b.failure(entry)) == ["N1"]
    configs.reverse()  # a reload
    assert asyncio.run(b.failure(entry)) == ["N2", "N3"]


def test_bouncer_templates_follow_reloads_and_keep_the_last_good_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bounce_template_file is read once per configuration; one that cannot be used
    is refused at first, then reported and the last good templates kept (the
    built-in one when even those no longer expand)."""
    path = tmp_path / "bounce.cf"
    path.write_text("failure_template = <<EOF\nSubject: Back\n\nSay $my_word.\nEOF\n")
    capture = Capture()
    configs = [config(bounce_template_file=str(path), my_word="hello")]
    b = Bouncer(lambda: configs[0], capture.enqueue, capture.content, clock=lambda: NOW)
    entry = QueueEntry("Q1", "alice@client.test", [rcpt("a@r.test")])
    asyncio.run(b.failure(entry))
    path.write_text("failure_template = <<EOF\nSubject: Oops\n\nAt $nosuch.\nEOF\n")
    configs[0] = config(bounce_template_file=str(path), my_word="bye")
    with caplog.at_level(logging.ERROR):
        b.reload(configs[0])
        asyncio.run(b.failure(entry))
        configs[0] = config(bounce_template_file=str(path))  # my_word is gone
        asyncio.run(b.failure(entry))
    texts = [text for _, text in capture.queued]
    assert b"Subject: Back\r\n" in texts[0] and b"\r\nSay hello.\r\n" in texts[0]
    assert b"Subject: Back\r\n" in texts[1] and b"\r\nSay bye.\r\n" in texts[1]
    assert b"Subject: Undelivered Mail Returned to Sender\r\n" in texts[2]
    assert b"\r\nI'm sorry to have to inform you" in texts[2]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: undefined $name in failure template: At $nosuch.; "
        "keeping the last good notice templates",
        f"{path}: undefined $name in failure template: At $nosuch.; "
        "keeping the last good notice templates",
        f"{path}: undefined $name in failure template: Say $my_word.; "
        "using the built-in failure template",
    ]
    fresh = Bouncer(lambda: configs[0], capture.enqueue, capture.content)
    with pytest.raises(ConfigError, match=r"^parameter bounce_template_file: .*: undefined"):
        asyncio.run(fresh.failure(entry))


class Failing(Capture):
    """Queues the first notice, then cannot queue any more."""

    async def enqueue(self, entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        if self.queued:
            raise ConnectionError("the queue is gone")
        return await super().enqueue(entry, build)


@pytest.mark.parametrize(("state", "words"), [("deferred", "warning"),
                                              ("bounced", "bouncing to")])
def test_a_postmaster_copy_that_cannot_be_queued_is_a_warning(
    state: str, words: str, caplog: pytest.LogCaptureFixture,
) -> None:
    capture = Failing()
    entry = QueueEntry("Q1", "alice@client.test", [rcpt("a@r.test", state=state)])
    b = bouncer(capture, notify_classes="bounce, delay")
    with caplog.at_level(logging.WARNING):
        sent = asyncio.run(b.delay(entry) if state == "deferred" else b.failure(entry))
    assert sent == ["N1"]
    assert caplog.records[-1].getMessage() == (
        f"Q1: postmaster notice failed while {words} alice@client.test")


def test_a_notice_that_cannot_be_queued_raises_for_the_caller_to_retry() -> None:
    capture = Failing()
    capture.queued.append((QueueEntry("X", "", []), b""))  # nothing more can be queued
    b = bouncer(capture, notify_classes="bounce, 2bounce")
    with pytest.raises(ConnectionError):
        asyncio.run(b.failure(QueueEntry("Q1", "alice@client.test", [rcpt("a@r.test")])))
    with pytest.raises(ConnectionError):  # a double bounce is the notice itself
        asyncio.run(b.failure(QueueEntry("Q2", "", [rcpt("a@r.test")])))


# -- an owner- alias told instead of the sender (local's bounce_workaround) ---------------

def test_failure_plan_for_an_owner_follows_the_senders_rules() -> None:
    """bounce_one_service(): the same rules with the owner in the sender's place; the
    message's own sender (null or not) is not asked."""
    rows = [rcpt("list@postbus.test")]
    for sender in ("alice@client.test", "", DOUBLE):
        entry = QueueEntry("Q1", sender, rows)
        assert summary(plan_failure(policy("bounce"), entry, rows, "owner-list@postbus.test")) == [
            ("failure", False, "", "owner-list@postbus.test", ["list@postbus.test"], False,
             "sender non-delivery notification"),
            ("failure", True, DOUBLE, "postmaster@mx.postbus.test", ["list@postbus.test"], True,
             "postmaster non-delivery notification"),
        ]
    never = [rcpt("list@postbus.test", "NEVER")]
    entry = QueueEntry("Q1", "alice@client.test", never)
    assert plan_failure(policy(), entry, never, "owner-list@postbus.test") == []
    assert plan_failure(policy(), entry, never, DOUBLE) == []


def test_bouncer_tells_the_owner_and_keeps_the_original_sender_in_the_report() -> None:
    capture = Capture()
    entry = QueueEntry("Q1", "alice@client.test", [rcpt("list@postbus.test")])
    ids = asyncio.run(bouncer(capture).failure(entry, entry.recipients,
                                               to="owner-list@postbus.test"))
    assert ids == ["N1"]
    [(notice, text)] = capture.queued
    assert (notice.sender, [r.address for r in notice.recipients]) == (
        "", ["owner-list@postbus.test"])
    assert b"\r\nTo: owner-list@postbus.test\r\n" in text
    assert b"\r\nX-Postbus-Sender: rfc822; alice@client.test\r\n" in text
