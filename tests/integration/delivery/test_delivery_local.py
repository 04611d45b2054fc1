"""delivery-local with real files: Maildir, mbox, aliases, virtual mailboxes, bounces."""

from __future__ import annotations

import email
import logging
import os
import re
from pathlib import Path

import pytest

from delivery_local.__main__ import main
from postbus.bus import subjects as s
from postbus.queue.entry import Recipient

from .conftest import MESSAGE, Bus, RunAgent
from .localfs import MAIL_OWNER, ROOT, VIRTUAL_ID, give, mailroot, owner_of

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture

# runs as default_privs (nobody): it may only read its input, and says so by its status
PIPE = "grep -q '^Delivered-To: team+x@postbus.test$'"
USERS = ["bob", "carol", "loop"]


def _settings(root: Path, **extra: str) -> dict[str, str]:
    """Local users from a table (mail_owner's rights as root), mail under ``root``."""
    (root / "users").write_text("".join(f"{user} ok\n" for user in USERS))
    return {
        "myhostname": "mail.postbus.test",
        "mydomain": "postbus.test",
        "myorigin": "postbus.test",
        "mail_spool_directory": f"{root}/mail/",
        "home_mailbox": "",
        "alias_maps": "",
        "local_recipient_maps": f"texthash:{root}/users",
        "mail_owner": MAIL_OWNER,
        **extra,
    }


def _only_message(box: Path) -> email.message.Message:
    [path] = list((box / "new").iterdir())
    assert not list((box / "tmp").iterdir())
    return email.message_from_bytes(path.read_bytes())


async def test_maildir_gets_return_path_and_delivered_to(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    await run_agent(main, "local", _settings(mailroot))
    job = await bus.submit("local", "mail.postbus.test", ["Bob@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason, result.relay) == (
        "sent", "2.0.0", "delivered to maildir", "local"
    )
    box = mailroot / "mail" / "bob"
    [path] = list((box / "new").iterdir())
    # the agent made the missing spool for mail_owner; bob is a table user: mail_owner's files
    spool = (mailroot / "mail").stat()
    assert (spool.st_uid, spool.st_gid) == owner_of(MAIL_OWNER)
    assert (path.stat().st_uid, path.stat().st_gid) == owner_of(MAIL_OWNER)
    assert (box.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)
    raw = path.read_bytes()
    assert raw.startswith(
        b"Return-Path: <alice@postbus.test>\nX-Original-To: Bob@postbus.test\n"
        b"Delivered-To: bob@postbus.test\nReceived: from client.test"
    )
    assert raw.endswith(b"\n\nHello Bob.\n.leading dot\nFrom the start of a line\n")
    line = next(r.getMessage() for r in caplog.records if job.queue_id in r.getMessage())
    assert line.startswith(f"{job.queue_id}: to=<Bob@postbus.test>, relay=local, delay=")
    assert line.endswith(", dsn=2.0.0, status=sent (delivered to maildir)")


async def test_no_original_to_without_enable_original_recipient(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    await run_agent(main, "local", _settings(mailroot, enable_original_recipient="no"))
    job = await bus.submit("local", "mail.postbus.test",
                           [Recipient("Bob@postbus.test", orig_rcpt="team@postbus.test")])
    [result] = (await bus.status(job.queue_id)).results
    assert result.status == "sent"
    [path] = list((mailroot / "mail" / "bob" / "new").iterdir())
    assert path.read_bytes().startswith(
        b"Return-Path: <alice@postbus.test>\nDelivered-To: bob@postbus.test\nReceived: ")


async def test_mbox_spool(bus: Bus, run_agent: RunAgent, mailroot: Path) -> None:
    (mailroot / "spool").mkdir()  # root's, 0755: root creates the mbox and gives it to bob
    await run_agent(main, "local", _settings(mailroot, mail_spool_directory=f"{mailroot}/spool"))
    for _ in range(2):
        job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"])
        [result] = (await bus.status(job.queue_id)).results
        assert (result.status, result.reason) == ("sent", "delivered to mailbox")
    box = mailroot / "spool" / "bob"
    assert (box.stat().st_uid, box.stat().st_gid, box.stat().st_mode & 0o777) == (
        *owner_of(MAIL_OWNER), 0o600
    )
    text = box.read_bytes()
    assert text.count(b"\nFrom alice@postbus.test  ") == 1 and text.startswith(b"From alice@")
    assert b"\n>From the start of a line\n\nFrom alice@postbus.test  " in text
    assert text.endswith(b">From the start of a line\n\n")


async def test_unknown_user_bounces(bus: Bus, run_agent: RunAgent, mailroot: Path) -> None:
    await run_agent(
        main, "local", _settings(mailroot, home_mailbox="Maildir/", recipient_delimiter="+")
    )
    job = await bus.submit("local", "mail.postbus.test", ["nosuchuser+x@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == (
        "bounced", "5.1.1", 'unknown user: "nosuchuser"'
    )


async def test_aliases_expand_to_users_files_commands_and_addresses(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    out = mailroot / "out"
    out.mkdir()
    out.chmod(0o1777)  # the file is written as default_privs
    aliases = mailroot / "aliases"
    aliases.write_text(
        "postmaster bob\n"
        f'team bob, carol, {out}/team.mbox, "|{PIPE}", friend@remote.test\n'
        "loop loop, carol\n"
        "bad |exit 67\n"
    )
    await run_agent(main, "local", _settings(
        mailroot, alias_maps=f"texthash:{aliases}", recipient_delimiter="+"
    ))
    job = await bus.submit(
        "local", "mail.postbus.test",
        ["postmaster@postbus.test", "team+x@postbus.test", "loop@postbus.test", "bad@postbus.test"],
    )
    postmaster, team, loop, bad = (await bus.status(job.queue_id)).results
    assert postmaster.status == team.status == loop.status == "sent"
    mail = mailroot / "mail"
    assert len(list((mail / "bob" / "new").iterdir())) == 2  # postmaster, team
    assert len(list((mail / "carol" / "new").iterdir())) == 2  # team, loop
    assert len(list((mail / "loop" / "new").iterdir())) == 1  # "loop: loop" is the mailbox
    assert (out / "team.mbox").read_bytes().startswith(b"From alice@postbus.test  ")
    assert (out / "team.mbox").stat().st_uid == owner_of("nobody")[0]  # default_privs
    assert (bad.status, bad.dsn) == ("bounced", "5.1.1")
    logs = [r.getMessage() for r in caplog.records if job.queue_id in r.getMessage()]
    assert any(
        "to=<bob@postbus.test>, orig_to=<postmaster@postbus.test>, relay=local," in line
        and line.endswith("status=sent (delivered to maildir)") for line in logs
    ), logs
    assert any(f"status=sent (delivered to file: {out}/team.mbox)" in line for line in logs)
    assert any(f"status=sent (delivered to command: {PIPE})" in line for line in logs)
    # one forwarded copy, logged for the alias as Postfix's forward_finish() logs it
    [forwarded] = [line for line in logs if "forwarded as " in line]
    assert "to=<team+x@postbus.test>, relay=local," in forwarded
    new_qid = forwarded.rsplit("forwarded as ", 1)[1].rstrip(")")
    got = await bus.store.queue.get(new_qid)
    assert got is not None and got[0].recipients[0].address == "friend@remote.test"
    content = await bus.store.queue.content(new_qid)
    # queued through cleanup, with CRLF lines as every queued message has
    # Postfix's forward.c headers first: Received: by ... id <new ID>, then Delivered-To:
    assert re.match(rb"Received: by mail\.postbus\.test \(Postbus\)\r\n\tid "
                    + new_qid.encode() + rb"; \w{3}, [ \d]\d \w{3} \d{4} [\d:]{8} [+-]\d{4} "
                    rb"\(\w+\)\r\nDelivered-To: team\+x@postbus\.test\r\nReceived: from ",
                    content), content[:300]
    assert b"\n" not in content.replace(b"\r\n", b"")


async def test_commands_restricted_and_loops_detected(
    bus: Bus, run_agent: RunAgent, mailroot: Path, tmp_path: Path
) -> None:
    aliases = mailroot / "aliases"
    aliases.write_text(f'cmd "|touch {tmp_path}/ran"\n')
    await run_agent(main, "local", _settings(
        mailroot, alias_maps=f"texthash:{aliases}", allow_mail_to_commands="forward"
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


async def test_virtual_mailboxes(bus: Bus, run_agent: RunAgent, mailroot: Path) -> None:
    base = mailroot / "vmail"
    base.mkdir()
    (base / "catch").mkdir()
    for path in (base, base / "catch"):
        give(path, VIRTUAL_ID, VIRTUAL_ID)
    maps = mailroot / "vmailbox"
    maps.write_text("alice@virt.test virt.test/alice/\n@catch.test catch/all\n")
    await run_agent(main, "virtual", _settings(
        mailroot, virtual_mailbox_base=str(base), virtual_mailbox_maps=f"texthash:{maps}",
        recipient_delimiter="+", virtual_uid_maps=f"static:{VIRTUAL_ID}",
        virtual_gid_maps=f"static:{VIRTUAL_ID}",
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
    want = (VIRTUAL_ID, VIRTUAL_ID) if ROOT else (os.geteuid(), os.getegid())
    for path in (base / "catch" / "all", base / "virt.test", next((base / "virt.test" / "alice"
                                                                   / "new").iterdir())):
        assert (path.stat().st_uid, path.stat().st_gid) == want, path
    assert (nobody.status, nobody.dsn, nobody.reason) == (
        "bounced", "5.1.1", 'unknown user: "nobody@virt.test"'
    )
    assert s.deliver_filter("virtual") == "postbus.deliver.virtual.*"
