"""A real mail flow seen from outside: `postbus events` follows it, a webhook receives it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.harness import MASTER_CF, MailSystem
from tests.webhook_receiver import Receiver, verify

pytestmark = pytest.mark.e2e

MESSAGE = "From: alice@client.test\r\nTo: bob@postbus.test\r\nSubject: hi\r\n\r\nHello.\r\n"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


def events_command(system: MailSystem, *args: str) -> list[str]:
    return [sys.executable, "-m", "postbus.cli.main", "-c", str(system.conf), "events", *args]


#: Every kind of a mail flow, active and removed included (not recorded by default).
EVERY_KIND = {"postbus_events_record": "received, active, deferred, delivered, bounced,"
                                       " expired, removed"}


def test_postbus_events_follows_a_mail_flow(tmp_path: Path) -> None:
    system = MailSystem(tmp_path, EVERY_KIND).start()
    try:
        # follow from a minute back, so the events are shown even should the
        # subscription be made after the mail went through
        with subprocess.Popen(events_command(system, "-j", "--since", "1m"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as follower:
            assert follower.stdout is not None and follower.stderr is not None
            lines: list[str] = []
            stdout = follower.stdout
            reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                                      daemon=True)
            reader.start()
            qid = system.send("alice@client.test", ["bob@postbus.test"], MESSAGE)

            def kinds() -> list[str]:
                return [e["kind"] for e in map(json.loads, list(lines)) if e["queue_id"] == qid]

            assert system.wait_for(lambda: "removed" in kinds(), timeout=15), (
                lines, system.maillog.read_text())
            follower.send_signal(signal.SIGINT)  # Ctrl-C ends it, quietly
            assert follower.wait(10) == 0
            reader.join(5)
            assert follower.stderr.read() == ""
        # two publishers each time: smtpd's received and the qmgr's active, the local
        # agent's delivered and the qmgr's removed may arrive either way round
        assert system.wait_for(lambda: len(kinds()) == 4, timeout=15), kinds()
        assert sorted(kinds()[:2]) == ["active", "received"]
        assert sorted(kinds()[2:]) == ["delivered", "removed"]
        received = next(e for e in map(json.loads, lines) if e["kind"] == "received")
        assert received["v"] == 1 and received["nrcpt"] == 1 and received["size"] > 0

        shown = subprocess.run(events_command(system, "--since", "1h", "-i", qid, "-n", "4"),
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout.splitlines()
        assert len(out) == 4, out
        assert any(re.fullmatch(rf"{STAMP} {qid}: received from=<alice@client.test>, size=\d+, "
                                r"nrcpt=1, client=unknown\[127\.0\.0\.1\], message-id=<\S+>", x)
                   for x in out), out
        assert any(re.fullmatch(rf"{STAMP} {qid}: active attempt=1", x) for x in out), out
        assert any(re.match(rf"{STAMP} {qid}: delivered to=<bob@postbus.test>, ", x)
                   for x in out[2:]), out
        assert any(re.fullmatch(rf"{STAMP} {qid}: removed \(delivered\)", x)
                   for x in out[2:]), out
    finally:
        system.stop()


def test_a_webhook_of_a_running_system_gets_its_events(tmp_path: Path) -> None:
    """A master.cf webhooks line, started as `postbus start` starts it, POSTs the
    events of a real mail flow to a receiver, signed."""
    with Receiver() as receiver:
        master = MASTER_CF + (
            "crm unix - - n - 1 webhooks\n"
            f"  -o postbus_webhook_url={receiver.url}\n"
            "  -o postbus_webhook_events=received,active,removed\n"
            "  -o postbus_webhook_secret=$crm_secret\n"
        )
        system = MailSystem(tmp_path, {"crm_secret": "horse-battery", **EVERY_KIND},
                            master_cf=master).start()
        try:
            assert "crm" in system.children
            qid = system.send("alice@client.test", ["bob@postbus.test"], MESSAGE)
            assert receiver.wait_for(
                lambda got: "removed" in [r.event["kind"] for r in got], timeout=15
            ), (system.output("crm"), system.maillog.read_text())
            got = [r for r in receiver.snapshot() if r.event["queue_id"] == qid]
            assert sorted(r.event["kind"] for r in got) == ["active", "received", "removed"]
            assert all(verify("horse-battery", r) for r in got)
            assert all(time.time() - int(r.headers["webhook-timestamp"]) < 60 for r in got)
        finally:
            system.stop()
