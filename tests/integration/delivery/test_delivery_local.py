"""delivery-local with real files: Maildir, mbox, aliases, virtual mailboxes, bounces."""

from __future__ import annotations

import email
import logging
from pathlib import Path

import pytest

from delivery_local.__main__ import main
from postbus.bus import subjects as s

from .conftest import MESSAGE, Bus, RunAgent

pytestmark = pytest.mark.integration

# runs as default_privs (nobody): it may only read its input, and says so by its status
PIPE = "grep -q '^Delivered-To: team+x@postbus.test$'"


def _settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "myhostname": "mail.postbus.test",
        "mydomain": "postbus.test",
        "myorigin": "postbus.test",
        "mail_spool_directory": f"{tmp_path}/mail/",
        "home_mailbox": "",
        "alias_maps": "",
        **extra,
    }


def _only_message(box: Path) -> email.message.Message:
    [path] = list((box / "new").iterdir())
    assert not list((box / "tmp").iterdir())
    return email.message_from_bytes(path.read_bytes())


async def test_maildir_gets_return_path_and_delivered_to(
    bus: Bus, run_agent: RunAgent, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    await run_agent(main, "local", _settings(tmp_path))
    job = await bus.submit("local", "mail.postbus.test", ["Bob@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason, result.relay) == (
        "sent", "2.0.0", "delivered to maildir", "local"
    )
    box = tmp_path / "mail" / "bob"
    [path] = list((box / "new").iterdir())
    raw = path.read_bytes()
    assert raw.startswith(
        b"Return-Path: <alice@postbus.test>\nX-Original-To: Bob@postbus.test\n"
        b"Delivered-To: bob@postbus.test\nReceived: from client.test"
    )
    assert raw.endswith(b"\n\nHello Bob.\n.leading dot\nFrom the start of a line\n")
    line = next(r.getMessage() for r in caplog.records if job.queue_id in r.getMessage())
    assert line.startswith(f"{job.queue_id}: to=<Bob@postbus.test>, relay=local, delay=")
    assert line.endswith(", dsn=2.0.0, status=sent (delivered to maildir)")


async def test_mbox_spool(bus: Bus, run_agent: RunAgent, tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    await run_agent(main, "local", _settings(tmp_path, mail_spool_directory=f"{tmp_path}/spool"))
    for _ in range(2):
        job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"])
        [result] = (await bus.status(job.queue_id)).results
        assert (result.status, result.reason) == ("sent", "delivered to mailbox")
    text = (tmp_path / "spool" / "bob").read_bytes()
    assert text.count(b"\nFrom alice@postbus.test  ") == 1 and text.startswith(b"From alice@")
    assert b"\n>From the start of a line\n\nFrom alice@postbus.test  " in text
    assert text.endswith(b">From the start of a line\n\n")


async def test_unknown_user_bounces(bus: Bus, run_agent: RunAgent, tmp_path: Path) -> None:
    await run_agent(
        main, "local", _settings(tmp_path, home_mailbox="Maildir/", recipient_delimiter="+")
    )
    job = await bus.submit("local", "mail.postbus.test", ["nosuchuser+x@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == (
        "bounced", "5.1.1", 'unknown user: "nosuchuser"'
    )


async def test_aliases_expand_to_users_files_commands_and_addresses(
    bus: Bus, run_agent: RunAgent, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    out = tmp_path / "out"
    out.mkdir()
    aliases = tmp_path / "aliases"
    aliases.write_text(
        "postmaster bob\n"
        f'team bob, carol, {out}/team.mbox, "|{PIPE}", friend@remote.test\n'
        "loop loop, carol\n"
        "bad |exit 67\n"
    )
    await run_agent(main, "local", _settings(
        tmp_path, alias_maps=f"texthash:{aliases}", recipient_delimiter="+"
    ))
    job = await bus.submit(
        "local", "mail.postbus.test",
        ["postmaster@postbus.test", "team+x@postbus.test", "loop@postbus.test", "bad@postbus.test"],
    )
    postmaster, team, loop, bad = (await bus.status(job.queue_id)).results
    assert postmaster.status == team.status == loop.status == "sent"
    mail = tmp_path / "mail"
    assert len(list((mail / "bob" / "new").iterdir())) == 2  # postmaster, team
    assert len(list((mail / "carol" / "new").iterdir())) == 2  # team, loop
    assert len(list((mail / "loop" / "new").iterdir())) == 1  # "loop: loop" is the mailbox
    assert (out / "team.mbox").read_bytes().startswith(b"From alice@postbus.test  ")
    assert (bad.status, bad.dsn) == ("bounced", "5.1.1")
    logs = [r.getMessage() for r in caplog.records if job.queue_id in r.getMessage()]
    assert any(
        "to=<bob@postbus.test>, orig_to=<postmaster@postbus.test>, relay=local," in line
        and line.endswith("status=sent (delivered to maildir)") for line in logs
    ), logs
    assert any(f"status=sent (delivered to file: {out}/team.mbox)" in line for line in logs)
    assert any(f"status=sent (delivered to command: {PIPE})" in line for line in logs)
    forwarded = next(line for line in logs if "to=<friend@remote.test>" in line)
    new_qid = forwarded.rsplit("forwarded as ", 1)[1].rstrip(")")
    got = await bus.store.get(new_qid)
    assert got is not None and got[0].recipients[0].address == "friend@remote.test"
    content = await bus.store.content(new_qid)
    assert content.startswith(b"Delivered-To: team+x@postbus.test\nReceived: ")


async def test_commands_restricted_and_loops_detected(
    bus: Bus, run_agent: RunAgent, tmp_path: Path
) -> None:
    aliases = tmp_path / "aliases"
    aliases.write_text(f'cmd "|touch {tmp_path}/ran"\n')
    await run_agent(main, "local", _settings(
        tmp_path, alias_maps=f"texthash:{aliases}", allow_mail_to_commands="forward"
    ))
    job = await bus.submit("local", "mail.postbus.test", ["cmd@postbus.test"])
    [cmd] = (await bus.status(job.queue_id)).results
    assert (cmd.status, cmd.dsn) == ("bounced", "5.7.1")
    assert cmd.reason == "mail to command is restricted"
    assert not (tmp_path / "ran").exists()
    looped = b"Delivered-To: bob@postbus.test\r\n" + MESSAGE
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"], looped)
    [loop] = (await bus.status(job.queue_id)).results
    assert (loop.status, loop.dsn, loop.reason) == (
        "bounced", "5.4.6", "mail forwarding loop for bob@postbus.test"
    )


async def test_virtual_mailboxes(bus: Bus, run_agent: RunAgent, tmp_path: Path) -> None:
    base = tmp_path / "vmail"
    base.mkdir()
    (base / "catch").mkdir()
    maps = tmp_path / "vmailbox"
    maps.write_text("alice@virt.test virt.test/alice/\n@catch.test catch/all\n")
    await run_agent(main, "virtual", _settings(
        tmp_path, virtual_mailbox_base=str(base), virtual_mailbox_maps=f"texthash:{maps}",
        recipient_delimiter="+",
    ))
    job = await bus.submit(
        "virtual", "virt.test",
        ["alice+news@virt.test", "anyone@catch.test", "nobody@virt.test"],
    )
    alice, catch, nobody = (await bus.status(job.queue_id)).results
    assert (alice.status, alice.reason, alice.relay) == ("sent", "delivered to maildir", "virtual")
    message = _only_message(base / "virt.test" / "alice")
    assert message["Delivered-To"] == "alice+news@virt.test"
    assert message["Subject"] == "hello"
    assert (catch.status, catch.reason) == ("sent", "delivered to mailbox")
    assert (base / "catch" / "all").read_bytes().startswith(b"From alice@postbus.test  ")
    assert (nobody.status, nobody.dsn, nobody.reason) == (
        "bounced", "5.1.1", 'unknown user: "nobody@virt.test"'
    )
    assert s.deliver_subject("virtual") == "postbus.deliver.virtual"
