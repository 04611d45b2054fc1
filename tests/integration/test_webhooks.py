"""Webhooks against a real HTTP receiver started by the test, fed by a real nats-server.

The webhooks role runs as its own process (``python -m webhooks``), as
``postbus start`` runs it; events are recorded with postbus.events as the
roles record them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postbus import dead_letters, events
from postbus.bus import subjects as s
from postbus.bus.jetstream import connect, ensure_streams
from postbus.servers import ServerProcess, free_port
from tests.webhook_receiver import Receiver, Request, verify

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "an-old-text-secret"


@dataclass
class Webhooks:
    conf: Path
    log: Path
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Webhooks:
        log = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhooks", "-c", str(self.conf), "-n", "crm/unix",
             "--metrics", f"127.0.0.1:{self.metrics_port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(self.log.read_text())

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def lines(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]

    def metric(self, sample: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(sample + " "):
                    return float(line.split()[-1])
        return 0.0

    def wait_metric(self, sample: str, value: float, timeout: float = 10.0) -> float:
        """The sample once it reached ``value`` (a reply is counted after it is read)."""
        deadline = time.monotonic() + timeout
        while (got := self.metric(sample)) < value and time.monotonic() < deadline:
            time.sleep(0.05)
        return got


@pytest.fixture
def webhooks(tmp_path: Path, nats: ServerProcess) -> Iterator[Webhooks]:
    hooks = Webhooks(tmp_path / "etc", tmp_path / "webhooks.out", free_port())
    yield hooks
    hooks.stop()


def configure(hooks: Webhooks, nats: ServerProcess, url: str, **settings: str) -> Webhooks:
    hooks.conf.mkdir(exist_ok=True)
    (hooks.conf / "main.cf").write_text(
        f"postbus_nats_url = {nats.url}\n"
        f"data_directory = {hooks.conf.parent}\n"
        f"crm_webhook_secret = {SECRET} {OLD_SECRET}\n"
    )
    options = {
        "postbus_webhook_url": url,
        "postbus_webhook_secret": "$crm_webhook_secret",
        "postbus_webhook_timeout": "2s",
        "postbus_webhook_minimal_backoff_time": "1s",
        "postbus_webhook_maximal_backoff_time": "2s",
        **settings,
    }
    (hooks.conf / "master.cf").write_text(
        "crm unix - - n - 1 webhooks\n"
        + "".join(f"  -o {name}={value}\n" for name, value in options.items())
    )
    return hooks


async def record(nats: ServerProcess, *batch: events.Event) -> None:
    nc = await connect(nats.url, "test")
    try:
        await ensure_streams(nc.jetstream())
        for event in batch:
            assert await events.publish(nc, event)
    finally:
        await nc.close()


def delivered(queue_id: str, rcpt: str = "bob@example.com") -> events.Event:
    return events.make("delivered", queue_id, sender="alice@example.org", recipient=rcpt,
                       relay="mx.example.com[192.0.2.1]:25", dsn="2.0.0",
                       reason="250 2.0.0 Ok: queued as 4F2", delay=0.42, attempt=1)


def test_signed_events_of_the_chosen_kinds_reach_the_receiver(
        webhooks: Webhooks, nats: ServerProcess) -> None:
    with Receiver() as receiver:
        configure(webhooks, nats, receiver.url,
                  postbus_webhook_events="received,delivered").start()
        batch = (
            events.make("received", "4BCD01", sender="alice@example.org",
                        recipients=["bob@example.com"], nrcpt=1, size=512),
            events.make("active", "4BCD01", attempt=1),  # not asked for
            delivered("4BCD01"),
        )
        asyncio.run(record(nats, *batch))
        assert receiver.wait_for(lambda got: len(got) >= 2), webhooks.log.read_text()
        got = sorted(receiver.snapshot(), key=lambda r: r.event["kind"])
        assert [r.event["kind"] for r in got] == ["delivered", "received"]
        for request, event in zip(got, (batch[2], batch[0]), strict=True):
            assert request.path == "/hooks/postbus?token=s3cret"
            assert request.body == event.encode()  # the event as recorded, byte for byte
            assert request.event_id == event.id
            assert request.headers["content-type"] == "application/json"
            assert request.headers["postbus-event-kind"] == event.kind
            assert request.headers["postbus-attempt"] == "1"
            assert verify(SECRET, request) and verify(OLD_SECRET, request)
            assert not verify("whsec_" + "QUJD" * 8, request)
            assert len(request.headers["webhook-signature"].split()) == 2
        assert got[0].event["relay"] == "mx.example.com[192.0.2.1]:25"
        assert got[0].event["reason"] == "250 2.0.0 Ok: queued as 4F2"
        sent = 'postbus_webhook_requests_total{result="sent",webhook="crm"}'
        assert webhooks.wait_metric(sent, 2) == 2
        # the active event was read and passed over, not sent
        asyncio.run(record(nats, delivered("4BCD02")))
        assert receiver.wait_for(lambda got: len(got) == 3)
        assert receiver.snapshot()[-1].event["queue_id"] == "4BCD02"


def test_a_failing_receiver_gets_every_event_until_it_answers(
        webhooks: Webhooks, nats: ServerProcess) -> None:
    """No reply within the timeout, then 503, then 200: each event arrives three
    times, signed anew each time, and is acknowledged once."""
    with Receiver(script=["hang", 503, 200]) as receiver:
        configure(webhooks, nats, receiver.url, postbus_webhook_max_attempts="5").start()
        batch = [delivered(f"4BCD1{i}") for i in range(3)]
        asyncio.run(record(nats, *batch))
        wanted = {e.id for e in batch}
        assert receiver.wait_for(
            lambda got: {r.event_id for r in got if r.answer == 200} == wanted, timeout=40
        ), webhooks.log.read_text()
        for event in batch:
            tries = [r for r in receiver.snapshot() if r.event_id == event.id]
            assert [r.answer for r in tries] == ["hang", 503, 200]
            assert [r.headers["postbus-attempt"] for r in tries] == ["1", "2", "3"]
            assert all(r.body == event.encode() and verify(SECRET, r) for r in tries)
            assert tries[1].at - tries[0].at >= 2.0  # the timeout, then a backoff of 1s
            assert tries[2].at - tries[1].at >= 1.9  # then 2s
        log = webhooks.log.read_text()
        assert ("4BCD10: webhook crm: event delivered, attempt 1 of 5: "
                "http://127.0.0.1:") in log
        assert "/hooks/postbus: no reply within 2s; trying again in 1s" in log
        assert "/hooks/postbus: 503 Service Unavailable: receiver says no; trying again in 2s" \
            in log
        assert "s3cret" not in log  # the URL's query is not logged
        assert webhooks.wait_metric('postbus_webhook_retries_total{webhook="crm"}', 6) == 6
        failed = 'postbus_webhook_requests_total{result="failed",webhook="crm"}'
        assert webhooks.wait_metric(failed, 6) == 6


def test_an_event_is_a_dead_letter_after_the_last_attempt(
        webhooks: Webhooks, nats: ServerProcess) -> None:
    with Receiver(script=[500]) as receiver:
        configure(webhooks, nats, receiver.url, postbus_webhook_max_attempts="3").start()
        event = delivered("4BCD20")
        asyncio.run(record(nats, event))

        async def dead() -> list[dead_letters.DeadLetter]:
            nc = await connect(nats.url, "test")
            try:
                js = nc.jetstream()
                found = []
                for _ in range(400):
                    try:
                        msg = await js.get_last_msg(s.WEBHOOK_DEAD_STREAM,
                                                    s.webhook_dead_subject("crm"))
                        found = [dead_letters.DeadLetter.read(msg)]
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
                return found
            finally:
                await nc.close()

        (letter,) = asyncio.run(dead())
        assert (letter.webhook, letter.attempts) == ("crm", 3)
        assert letter.event == json.loads(event.encode())
        assert letter.error == "500 Internal Server Error: receiver says no"
        assert letter.url.startswith("http://127.0.0.1:") and letter.url.endswith(
            "/hooks/postbus")
        assert [r.answer for r in receiver.snapshot()] == [500, 500, 500]
        (line,) = webhooks.lines("given up")
        assert line.endswith(
            "4BCD20: webhook crm: event delivered given up after 3 attempts: "
            f"{letter.url}: 500 Internal Server Error: receiver says no; "
            "kept on postbus.webhook.dead.crm")
        assert webhooks.wait_metric('postbus_webhook_dead_letters_total{webhook="crm"}', 1) == 1
        shown = subprocess.run(
            [sys.executable, "-m", "postbus.cli.main", "-c", str(webhooks.conf), "events",
             "--dead-letter", "crm", "--no-follow"], capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        (line,) = shown.stdout.splitlines()
        assert re.fullmatch(
            rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}} 4BCD20: webhook crm: event delivered "
            rf"{event.id} given up after 3 attempts: 500 Internal Server Error: receiver says no",
            line), line
        shown = subprocess.run(
            [sys.executable, "-m", "postbus.cli.main", "-c", str(webhooks.conf), "events",
             "--dead-letter", "crm", "--no-follow", "-j"], capture_output=True, text=True,
            timeout=30)
        kept = json.loads(shown.stdout)
        assert (kept["webhook"], kept["attempts"], kept["event"]) == (
            "crm", 3, json.loads(event.encode()))


def test_a_killed_webhooks_process_loses_no_event(
        webhooks: Webhooks, nats: ServerProcess) -> None:
    """kill -9 with four POSTs in flight (the receiver holds their replies) while
    events keep coming: after the restart the four are POSTed again and every
    event reaches the receiver, none lost (some twice: at least once)."""
    with Receiver(hold_from=8) as receiver:
        configure(webhooks, nats, receiver.url, postbus_webhook_concurrency="4").start()
        first = [delivered(f"4BCD3{i:02}") for i in range(40)]
        asyncio.run(record(nats, *first))
        assert receiver.wait_for(lambda got: len(got) == 12), webhooks.log.read_text()
        held = {r.event_id for r in receiver.snapshot() if r.answer == "held"}
        assert len(held) == 4
        webhooks.kill()
        receiver.gate.set()  # the replies go to a dead process
        second = [delivered(f"4BCD4{i:02}") for i in range(40)]
        asyncio.run(record(nats, *second))
        restarted = time.time()
        receiver.hold_from = None
        webhooks.start()
        wanted = {e.id for e in first + second}

        def complete(got: list[Request]) -> bool:
            again = {r.event_id for r in got if r.at >= restarted}
            return {r.event_id for r in got} >= wanted and again >= held

        assert receiver.wait_for(complete, timeout=60), (
            len(wanted - receiver.ids()), webhooks.log.read_text())
        assert receiver.ids() == wanted


def test_a_receiver_that_is_not_there_is_tried_again_then_given_up(
        webhooks: Webhooks, nats: ServerProcess) -> None:
    port = free_port()  # nothing listens there
    configure(webhooks, nats, f"http://127.0.0.1:{port}/hook", postbus_webhook_max_attempts="2")
    webhooks.start()
    asyncio.run(record(nats, delivered("4BCD60")))
    deadline = time.monotonic() + 20
    while not webhooks.lines("given up") and time.monotonic() < deadline:
        time.sleep(0.05)
    (retry,) = webhooks.lines("attempt 1 of 2")
    assert f"4BCD60: webhook crm: event delivered, attempt 1 of 2: http://127.0.0.1:{port}/hook: " \
        in retry and retry.endswith("; trying again in 1s")
    assert retry.endswith(f"/hook: connect to 127.0.0.1:{port}: Connection refused; "
                          "trying again in 1s"), retry
    (line,) = webhooks.lines("given up")
    assert line.endswith(
        f"4BCD60: webhook crm: event delivered given up after 2 attempts: "
        f"http://127.0.0.1:{port}/hook: connect to 127.0.0.1:{port}: Connection refused; "
        "kept on postbus.webhook.dead.crm"), line


def test_a_webhook_without_a_secret_stops_at_start_and_one_without_url_idles(
        webhooks: Webhooks, nats: ServerProcess) -> None:
    configure(webhooks, nats, "https://crm.example.com/in", postbus_webhook_secret="")
    proc = subprocess.run(
        [sys.executable, "-m", "webhooks", "-c", str(webhooks.conf), "-n", "crm/unix"],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.endswith(  # -o settings are located at their service's line
        f"postbus/webhooks[{line.split('[')[1].split(']')[0]}]: "
        f"fatal: {webhooks.conf}/master.cf, line 1: parameter postbus_webhook_secret: "
        "postbus_webhook_url is set, but no secret to sign with (postbus_webhook_secret or "
        "postbus_webhook_secret_file)"), proc.stderr
    configure(webhooks, nats, "").start()  # ready, and sends nothing
    assert webhooks.lines("webhook crm: no postbus_webhook_url: nothing to send")


def test_a_consumer_that_is_gone_is_made_again(webhooks: Webhooks, nats: ServerProcess) -> None:
    with Receiver() as receiver:
        configure(webhooks, nats, receiver.url).start()

        async def delete() -> None:
            nc = await connect(nats.url, "test")
            try:
                await nc.jetstream().delete_consumer(s.EVENTS_STREAM, "webhook-crm")
            finally:
                await nc.close()

        asyncio.run(delete())
        deadline = time.monotonic() + 20
        while not webhooks.lines("consumer gone") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert webhooks.lines("warning: webhook-crm: consumer gone; declaring it again"), \
            webhooks.log.read_text()
        event = delivered("4BCD70")
        asyncio.run(record(nats, event))
        assert receiver.wait_for(lambda got: event.id in {r.event_id for r in got}), \
            webhooks.log.read_text()
