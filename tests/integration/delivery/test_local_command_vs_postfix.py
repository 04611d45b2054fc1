"""mailbox_command outcomes and an alias loop, word for word as Postfix's local(8) logs them.

A private Postfix delivers to ``bin+EXT@localhost`` through the same script
our agent runs (exit 75, 67, 3, a ``D.S.N text`` answer, a time-out); its
log (recorded in ``tests/data/postfix/local_command.json``) is what ours must
say, with the script's path as ``SCRIPT``. Two aliases naming each other end
in the same ``alias database loop`` bounce, on the same name.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from delivery_local.__main__ import main
from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.recorded import Recording

from .conftest import Bus, RunAgent
from .localfs import MAIL_OWNER, PASSWD_USER, ROOT, mailroot
from .peers import Peer

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture

RECORDING = Recording("local_command")
EXTS = ["75", "67", "3", "dsn", "slow"]
SCRIPT = """#!/bin/sh
case "$EXTENSION" in
  75) echo "try later"; exit 75 ;;
  67) printf 'no such\\tuser\\n'; exit 67 ;;
  3) echo oops; exit 3 ;;
  dsn) echo "4.2.2 mailbox full"; exit 1 ;;
  slow) sleep 30 ;;
esac
cat > /dev/null
"""
_STATUS = re.compile(r"to=<bin\+(\w+)@localhost>, relay=local, .*dsn=(\S+), status=(\w+) "
                     r"\((.*)\)$", re.M)


def _script(root: Path) -> Path:
    path = root / "deliver"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return path


def _postfix() -> dict[str, Any]:
    port = free_port()
    instance = postfix_instance.PostfixInstance(port, {
        "recipient_delimiter": "+", "command_time_limit": "2s", "mailbox_command": "SCRIPT",
    })
    script = _script(instance.root)
    main_cf = instance.etc / "main.cf"
    main_cf.write_text(main_cf.read_text().replace("= SCRIPT", f"= {script}"))
    instance.start()
    try:
        wait_port("127.0.0.1", port, 20)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("alice@example.com", [f"bin+{e}@localhost" for e in EXTS],
                            b"Subject: cmd\r\n\r\nbody\r\n")
        deadline = time.monotonic() + 60
        while len(found := _STATUS.findall(
                instance.maillog.read_text() if instance.maillog.exists() else "")) < len(EXTS):
            assert time.monotonic() < deadline, "Postfix logged no delivery"
            time.sleep(0.1)
        return {ext: [dsn, status, reason.replace(str(script), "SCRIPT")]
                for ext, dsn, status, reason in found}
    finally:
        instance.stop()


async def test_mailbox_command_outcomes_as_postfix(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    live = _postfix if postfix_instance.available() else None
    postfix = RECORDING.answer("mailbox_command", live)
    script = _script(mailroot)
    user = PASSWD_USER if ROOT else pwd.getpwuid(os.geteuid()).pw_name
    await run_agent(main, "local", {
        "myhostname": "mail.postbus.test", "myorigin": "postbus.test", "mail_owner": MAIL_OWNER,
        "recipient_delimiter": "+", "command_time_limit": "4s", "mailbox_command": str(script),
        "alias_maps": "", "forward_path": "",
    })
    job = await bus.submit("local", "localhost", [f"{user}+{e}@localhost" for e in EXTS])
    ours = {ext: [r.dsn, r.status, r.reason.replace(str(script), "SCRIPT")]
            for ext, r in zip(EXTS, (await bus.status(job.queue_id)).results, strict=True)}
    assert ours == postfix


_LOOP = re.compile(r"to=<(\S+)>, orig_to=<(\S+)>, relay=local, .*dsn=(\S+), status=(\w+) "
                   r"\((.*)\)$", re.M)


def _postfix_alias_loop() -> dict[str, Any]:
    port = free_port()
    instance = postfix_instance.PostfixInstance(port, {
        "alias_maps": "texthash:ALIASES", "local_recipient_maps": "", "myorigin": "localhost",
    })
    (instance.root / "aliases").write_text("ping pong\npong ping\n")
    main_cf = instance.etc / "main.cf"
    main_cf.write_text(main_cf.read_text().replace("ALIASES", str(instance.root / "aliases")))
    instance.start()
    try:
        wait_port("127.0.0.1", port, 20)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("alice@example.com", ["ping@localhost"], b"Subject: loop\r\n\r\nx\r\n")
        deadline = time.monotonic() + 60
        while not (found := _LOOP.findall(
                instance.maillog.read_text() if instance.maillog.exists() else "")):
            assert time.monotonic() < deadline, "Postfix logged no delivery"
            time.sleep(0.1)
        warnings = re.findall(r"warning: (alias database loop for \S+)",
                              instance.maillog.read_text())
        return {"log": list(found[0]), "warnings": warnings}
    finally:
        instance.stop()


async def test_alias_loop_as_postfix(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = _postfix_alias_loop if postfix_instance.available() else None
    postfix = RECORDING.answer("alias_loop", live)
    caplog.set_level(logging.INFO, "postbus.delivery")
    (mailroot / "aliases").write_text("ping pong\npong ping\n")
    await run_agent(main, "local", {
        "myhostname": "mail.postbus.test", "myorigin": "localhost", "mail_owner": MAIL_OWNER,
        "alias_maps": f"texthash:{mailroot}/aliases", "local_recipient_maps": "",
    })
    job = await bus.submit("local", "localhost", ["ping@localhost"])
    [result] = (await bus.status(job.queue_id)).results
    line = next(r.getMessage() for r in caplog.records
                if r.getMessage().startswith(f"{job.queue_id}: to="))
    found = _LOOP.findall(line)
    assert found and list(found[0]) == postfix["log"], line
    assert (result.dsn, result.status, result.reason) == tuple(postfix["log"][2:])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.removeprefix("warning: ") for w in warnings] == postfix["warnings"]


_LOCAL_LINE = re.compile(r"^\S+ \S+ \S+ \S+ postfix/local\[\d+\]: (\w+): (to=<.*)$", re.M)


def _masked(line: str) -> str:
    """A delivery log line without its timings and queue IDs."""
    line = re.sub(r"delay=\S+, delays=\S+, ", "", line)
    return re.sub(r"forwarded as \w+\)", "forwarded as QID)", line)


def _postfix_owner_alias() -> dict[str, Any]:
    port = free_port()
    with Peer() as peer:
        instance = postfix_instance.PostfixInstance(port, {
            "alias_maps": "texthash:ALIASES", "local_recipient_maps": "",
            "myorigin": "localhost", "relayhost": f"[127.0.0.1]:{peer.port}",
        })
        (instance.root / "aliases").write_text(OWNER_ALIASES)
        mail = instance.root / "mail"
        mail.mkdir(mode=0o1777)
        mail.chmod(0o1777)
        main_cf = instance.etc / "main.cf"
        main_cf.write_text(main_cf.read_text().replace("ALIASES", str(instance.root / "aliases"))
                           + f"mail_spool_directory = {mail}/\n")
        instance.start()
        try:
            wait_port("127.0.0.1", port, 20)
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("alice@example.com", ["list@localhost"],
                                b"Subject: list\r\n\r\nx\r\n")
            deadline = time.monotonic() + 60
            while not peer.handler.messages:
                assert time.monotonic() < deadline, "Postfix forwarded nothing"
                time.sleep(0.1)
            first = _LOCAL_LINE.findall(instance.maillog.read_text())[0][0]
            lines = [_masked(line) for qid, line in _LOCAL_LINE.findall(
                instance.maillog.read_text()) if qid == first]
            sender, rcpts, _ = peer.handler.messages[0]
            return {"sender": sender, "rcpts": rcpts, "log": sorted(lines)}
        finally:
            instance.stop()


OWNER_ALIASES = "list friend@remote.test, bin\nowner-list listadmin\n"


async def test_owner_alias_as_postfix(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = _postfix_owner_alias if postfix_instance.available() else None
    postfix = RECORDING.answer("owner_alias", live)
    caplog.set_level(logging.INFO, "postbus.delivery")
    (mailroot / "aliases").write_text(OWNER_ALIASES)
    await run_agent(main, "local", {
        "myhostname": "mail.postbus.test", "myorigin": "localhost", "mail_owner": MAIL_OWNER,
        "alias_maps": f"texthash:{mailroot}/aliases", "local_recipient_maps": "",
        "compatibility_level": "3.6",  # as the private Postfix: no append_dot_mydomain
    })
    job = await bus.submit("local", "localhost", ["list@localhost"], sender="alice@example.com")
    [result] = (await bus.status(job.queue_id)).results
    assert result.status == "sent"
    lines = [_masked(r.getMessage().split(": ", 1)[1]) for r in caplog.records
             if r.getMessage().startswith(f"{job.queue_id}: to=")]
    assert sorted(lines) == postfix["log"]
    [line] = [r.getMessage() for r in caplog.records if "forwarded as " in r.getMessage()]
    got = await bus.store.queue.get(line.rsplit("forwarded as ", 1)[1].rstrip(")"))
    assert got is not None
    # one message for the list's members, with the owner as sender, as Postfix's
    assert got[0].sender == postfix["sender"]
    assert sorted(r.address for r in got[0].recipients) == ["bin@localhost",
                                                            *postfix["rcpts"]]
