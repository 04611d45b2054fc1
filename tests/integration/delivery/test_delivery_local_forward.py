"""local(8) beyond the mailbox: mailbox_command, .forward files (forward_path), owner- aliases,
forwarding loops; with real processes and files.

The recipient is a passwd user: as root (CI) Debian's ``bin`` (uid 2), whose
commands and files must run and be written with uid 2; not as root, the
user running the tests, and everything runs as that user.
"""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

import pytest

from delivery_local.__main__ import main
from delivery_smtp.__main__ import main as smtp_main
from postbus.bus import subjects as s
from postbus.queue.entry import DeliveryStatus, Recipient

from .conftest import MESSAGE, Bus, RunAgent
from .localfs import MAIL_OWNER, PASSWD_USER, ROOT, give, mailroot, uid_gid
from .peers import Peer

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture

USER = PASSWD_USER if ROOT else pwd.getpwuid(os.geteuid()).pw_name
ENTRY = pwd.getpwnam(USER)

# writes its environment, uid and input where the test can read them; exits as told
SCRIPT = """#!/bin/sh
out={out}
case "$EXTENSION" in
  75) echo "try later"; exit 75 ;;
  67) printf 'no such\\tuser\\n'; exit 67 ;;
  3) echo oops; exit 3 ;;
  dsn) echo "4.2.2 mailbox full"; exit 1 ;;
  slow) sleep 30 ;;
esac
env > "$out/env.$EXTENSION"
id -u > "$out/uid.$EXTENSION"
cat > "$out/msg.$EXTENSION"
"""


def _settings(root: Path, **extra: str) -> dict[str, str]:
    (root / "users").write_text("bob ok\ncarol ok\n")
    spool = root / "spool"
    spool.mkdir(exist_ok=True)
    spool.chmod(0o1777)  # the passwd user writes its own Maildir here
    return {
        "myhostname": "mail.postbus.test",
        "mydomain": "postbus.test",
        "myorigin": "postbus.test",
        "mydestination": "postbus.test, mail.postbus.test",
        "mail_spool_directory": f"{spool}/",
        "home_mailbox": "",
        "alias_maps": "",
        "local_recipient_maps": f"texthash:{root}/users",
        "mail_owner": MAIL_OWNER,
        "recipient_delimiter": "+",
        **extra,
    }


def _out(root: Path) -> Path:
    out = root / "out"
    out.mkdir(exist_ok=True)
    out.chmod(0o1777)
    return out


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


async def test_mailbox_command_runs_as_the_recipient_with_postfix_environment(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    out = _out(mailroot)
    script = mailroot / "deliver"
    script.write_text(SCRIPT.format(out=out))
    script.chmod(0o755)
    await run_agent(main, "local", _settings(
        mailroot, mailbox_command=str(script), export_environment="TZ LANG=C.UTF-8"))
    rcpt = Recipient(f"{USER}+ok@postbus.test", orig_rcpt="Orig@postbus.test")
    job = await bus.submit("local", "mail.postbus.test", [rcpt], sender="a'b;c@remote.test",
                           client_name="client.test", client_addr="127.0.0.1",
                           helo="helo.test", protocol="ESMTP")
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == (
        "sent", "2.0.0", f"delivered to command: {script}")
    env = _env(out / "env.ok")
    assert {k: env.get(k) for k in (
        "HOME", "SHELL", "USER", "LOGNAME", "LOCAL", "DOMAIN", "EXTENSION", "RECIPIENT",
        "SENDER", "ORIGINAL_RECIPIENT", "PATH", "LANG", "CLIENT_HOSTNAME", "CLIENT_ADDRESS",
        "CLIENT_HELO", "CLIENT_PROTOCOL")} == {
        "HOME": ENTRY.pw_dir, "SHELL": ENTRY.pw_shell, "USER": USER, "LOGNAME": USER,
        "LOCAL": f"{USER}+ok", "DOMAIN": "postbus.test", "EXTENSION": "ok",
        "RECIPIENT": f"{USER}+ok@postbus.test",
        "SENDER": "a_b_c@remote.test",  # command_expansion_filter: no quote, no semicolon
        "ORIGINAL_RECIPIENT": "Orig@postbus.test", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
        "CLIENT_HOSTNAME": "client.test", "CLIENT_ADDRESS": "127.0.0.1",
        "CLIENT_HELO": "helo.test", "CLIENT_PROTOCOL": "ESMTP",
    }
    assert "NATS_URL" not in env and "PYTHONPATH" not in env  # only export_environment
    assert (out / "uid.ok").read_text() == f"{ENTRY.pw_uid if ROOT else os.geteuid()}\n"
    msg = (out / "msg.ok").read_bytes()
    assert msg.startswith(b"From a'b;c@remote.test  ")
    assert (b"\nReturn-Path: <a'b;c@remote.test>\nX-Original-To: Orig@postbus.test\n"
            b"Delivered-To: " + f"{USER}+ok@postbus.test".encode() + b"\nReceived: ") in msg
    assert not os.listdir(mailroot / "spool")  # the command is the mailbox


async def test_mailbox_command_exit_status_as_postfix_reports_it(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    out = _out(mailroot)
    script = mailroot / "deliver"
    script.write_text(SCRIPT.format(out=out))
    script.chmod(0o755)
    await run_agent(main, "local", _settings(
        mailroot, mailbox_command=str(script), command_time_limit="4s"))
    exts = ["75", "67", "3", "dsn", "slow"]
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}+{e}@postbus.test" for e in exts])
    got = [(r.status, r.dsn, r.reason) for r in (await bus.status(job.queue_id)).results]
    assert got == [
        ("deferred", "4.3.0", "temporary failure. Command output: try later "),
        ("bounced", "5.1.1", "user unknown. Command output: no such user "),
        ("bounced", "5.3.0", f'Command died with status 3: "{script}". Command output: oops '),
        ("deferred", "4.2.2", "mailbox full "),
        ("bounced", "5.3.0", f'Command time limit exceeded: "{script}"'),
    ]


async def test_mailbox_command_maps_by_user_name(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    out = _out(mailroot)
    (mailroot / "commands").write_text(f"{USER} touch {out}/mapped\n")
    await run_agent(main, "local", _settings(
        mailroot, mailbox_command=f"touch {out}/default",
        mailbox_command_maps=f"texthash:{mailroot}/commands"))
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.reason) == ("sent", f"delivered to command: touch {out}/mapped")
    assert (out / "mapped").exists() and not (out / "default").exists()


async def _statuses(bus: Bus, queue_id: str, count: int) -> list[DeliveryStatus]:
    """The first ``count`` DeliveryStatus reports of a message (in any order)."""
    js = bus.nc.jetstream()
    sub = await js.pull_subscribe(s.status_subject(queue_id), stream=s.WORK_STREAM)
    got: list[DeliveryStatus] = []
    try:
        while len(got) < count:
            for msg in await sub.fetch(count - len(got), timeout=20):
                await msg.ack()
                got.append(DeliveryStatus.decode(msg.data))
    finally:
        await sub.unsubscribe()
    return got


def _forward(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)
    give(path, *uid_gid(USER))


async def test_dotforward_addresses_commands_files_and_own_mailbox(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    out = _out(mailroot)
    fwd = mailroot / "fwd"
    fwd.mkdir()
    # the extension's own file first, as Postfix's default forward_path
    _forward(fwd / f"{USER}+lists", f"{out}/lists.mbox\n")
    _forward(fwd / USER, f'# my forward\nfriend@remote.test, "|id -u > {out}/fwd.uid"\n'
                         f"\\{USER}\n")
    await run_agent(main, "local", _settings(
        mailroot, forward_path=f"{fwd}/$user${{recipient_delimiter}}${{extension}}, {fwd}/$user"))
    job = await bus.submit("local", "mail.postbus.test",
                           [f"{USER}@postbus.test", f"{USER}+lists@postbus.test"])
    plain, lists = (await bus.status(job.queue_id)).results
    assert plain.status == lists.status == "sent"
    uid = ENTRY.pw_uid if ROOT else os.geteuid()
    assert (out / "fwd.uid").read_text() == f"{uid}\n"  # the user's rights, not default_privs
    assert (out / "lists.mbox").stat().st_uid == uid
    assert (out / "lists.mbox").read_bytes().startswith(b"From alice@postbus.test  ")
    [kept] = list((mailroot / "spool" / USER / "new").iterdir())  # \user: the mailbox
    assert f"Delivered-To: {USER}@postbus.test\n".encode() in kept.read_bytes()
    logs = [r.getMessage() for r in caplog.records if job.queue_id in r.getMessage()]
    [forwarded] = [line for line in logs if "forwarded as " in line]
    assert f"to=<{USER}@postbus.test>, relay=local," in forwarded
    new_qid = forwarded.rsplit("forwarded as ", 1)[1].rstrip(")")
    got = await bus.store.queue.get(new_qid)
    assert got is not None
    assert (got[0].sender, [r.address for r in got[0].recipients]) == (
        "alice@postbus.test", ["friend@remote.test"])
    content = await bus.store.queue.content(new_qid)
    assert content.startswith(b"Received: by mail.postbus.test (Postbus)\r\n\tid ")
    assert f"\r\nDelivered-To: {USER}@postbus.test\r\nReceived: from ".encode() in content
    # the forwarded copy coming back to the same user is a loop, as Postfix reports it
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"], content)
    [loop] = (await bus.status(job.queue_id)).results
    assert (loop.status, loop.dsn, loop.reason) == (
        "bounced", "5.4.6", f"mail forwarding loop for {USER}@postbus.test")


async def test_unsafe_or_restricted_dotforward(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    out = _out(mailroot)
    fwd = mailroot / "fwd"
    fwd.mkdir()
    _forward(fwd / USER, f'"|touch {out}/ran"\n', mode=0o666)
    settings = _settings(mailroot, forward_path=f"{fwd}/$user")
    await run_agent(main, "local", settings)
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    # a world-writable .forward is ignored with Postfix's warning: mail goes to the mailbox
    assert (result.status, result.reason) == ("sent", "delivered to maildir")
    assert f"file {fwd}/{USER} is world writable" in [r.getMessage() for r in caplog.records]
    assert not (out / "ran").exists()
    await run_agent.stop()
    (fwd / USER).chmod(0o644)
    await run_agent(main, "local", {**settings, "allow_mail_to_commands": "alias"})
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == (
        "bounced", "5.7.1", "mail to command is restricted")
    assert not (out / "ran").exists()


@pytest.mark.parametrize("expand_owner", ["no", "yes"])
async def test_owner_alias_becomes_the_envelope_sender(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog, expand_owner: str
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    (mailroot / "aliases").write_text(
        "list friend@remote.test, bob\nowner-list listadmin\n"
        "plain other@remote.test\n")
    await run_agent(main, "local", _settings(
        mailroot, alias_maps=f"texthash:{mailroot}/aliases", expand_owner_alias=expand_owner))
    job = await bus.submit("local", "mail.postbus.test", [
        Recipient("list@postbus.test", orig_rcpt="List@postbus.test"),
        "plain@postbus.test"])
    listed, plain = (await bus.status(job.queue_id)).results
    assert listed.status == plain.status == "sent"
    logs = [r.getMessage() for r in caplog.records if job.queue_id in r.getMessage()]
    queued = {}
    for line in logs:
        if "forwarded as " in line:
            qid = line.rsplit("forwarded as ", 1)[1].rstrip(")")
            got = await bus.store.queue.get(qid)
            assert got is not None
            queued[line.split(", ")[0].split("to=")[1]] = (
                got[0].sender, sorted((r.address, r.orig_rcpt) for r in got[0].recipients))
    owner = "owner-list@postbus.test" if expand_owner == "no" else "listadmin@postbus.test"
    # one new message per alias: the list's members, local ones too, with the owner as
    # sender and without the list's original recipient (each is its own)
    assert queued == {
        "<list@postbus.test>": (owner, [("bob@postbus.test", "bob@postbus.test"),
                                        ("friend@remote.test", "friend@remote.test")]),
        "<plain@postbus.test>": ("alice@postbus.test",
                                 [("other@remote.test", "plain@postbus.test")]),
    }
    assert not (mailroot / "spool" / "bob").exists()


async def test_alias_and_forward_loops_between_users(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    (mailroot / "aliases").write_text(f"bob carol\ncarol bob\nme {USER}\n")
    fwd = mailroot / "fwd"
    fwd.mkdir()
    _forward(fwd / USER, "me\n")  # back to the alias that names this user
    await run_agent(main, "local", _settings(
        mailroot, alias_maps=f"texthash:{mailroot}/aliases", forward_path=f"{fwd}/$user"))
    looped = b"Delivered-To: carol@postbus.test\r\n" + MESSAGE
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"], looped)
    [bob] = (await bus.status(job.queue_id)).results
    assert (bob.status, bob.dsn, bob.reason) == (
        "bounced", "5.4.6", "mail forwarding loop for carol@postbus.test")
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"])
    [me] = (await bus.status(job.queue_id)).results
    assert me.status == "sent"


async def test_luser_relay_and_required_aliases(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    settings = _settings(mailroot, local_recipient_maps="")
    (mailroot / "users").write_text("")
    await run_agent(main, "local", settings)
    job = await bus.submit("local", "mail.postbus.test",
                           ["postmaster@postbus.test", "nobody1@postbus.test"])
    postmaster, nobody = (await bus.status(job.queue_id)).results
    # Postfix tosses mail for a missing required alias, with a warning
    assert (postmaster.status, postmaster.dsn, postmaster.reason) == ("sent", "2.0.0", "discarded")
    assert "required alias not found: postmaster" in [r.getMessage() for r in caplog.records]
    assert (nobody.status, nobody.reason) == ("bounced", 'unknown user: "nobody1"')
    await run_agent.stop()
    await run_agent(main, "local", {**settings, "luser_relay": f"{USER}+$user"})
    job = await bus.submit("local", "mail.postbus.test", ["nobody1@postbus.test"])
    [relayed] = (await bus.status(job.queue_id)).results
    assert (relayed.status, relayed.reason) == ("sent", "delivered to maildir")
    [kept] = list((mailroot / "spool" / USER / "new").iterdir())
    assert b"\nDelivered-To: nobody1@postbus.test\n" in kept.read_bytes()
    await run_agent.stop()
    await run_agent(main, "local", {**settings, "luser_relay": "$user@remote.test"})
    job = await bus.submit("local", "mail.postbus.test", ["nobody2@postbus.test"])
    [relayed] = (await bus.status(job.queue_id)).results
    assert relayed.status == "sent" and relayed.reason.startswith("forwarded as ")
    got = await bus.store.queue.get(relayed.reason.rsplit(" ", 1)[1])
    assert got is not None and got[0].recipients[0].address == "nobody2@remote.test"


async def test_require_home_directory(bus: Bus, run_agent: RunAgent, mailroot: Path) -> None:
    home = pwd.getpwnam("nobody").pw_dir  # Debian's nobody: /nonexistent
    assert not os.path.exists(home)
    await run_agent(main, "local", _settings(mailroot, require_home_directory="yes"))
    job = await bus.submit("local", "mail.postbus.test",
                           ["nobody@postbus.test", f"{USER}@postbus.test"])
    nobody, user = (await bus.status(job.queue_id)).results
    assert (nobody.status, nobody.dsn, nobody.reason) == (
        "deferred", "4.3.0", f"cannot access home directory {home}: No such file or directory")
    assert (user.status, user.reason) == ("sent", "delivered to maildir")


async def test_dotforward_include_is_read_with_the_users_rights(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    secret = mailroot / "secret"
    secret.write_text("stolen@remote.test\n")
    secret.chmod(0o600)  # root's (or ours, not as root)
    fwd = mailroot / "fwd"
    fwd.mkdir()
    _forward(fwd / USER, f":include:{secret}\n")
    await run_agent(main, "local", _settings(mailroot, forward_path=f"{fwd}/$user"))
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    logs = [r.getMessage() for r in caplog.records]
    if ROOT:  # the user cannot read it, so neither can their .forward
        assert (result.status, result.dsn, result.reason) == (
            "bounced", "5.3.5", "mail system configuration error")
        assert f"cannot open include file {secret}: Permission denied" in logs
        assert not any("stolen@remote.test" in line for line in logs)
    else:
        assert (result.status, result.reason[:13]) == ("sent", "forwarded as ")


async def test_an_agent_that_is_not_root_ignores_other_users_dotforward(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root, a user's .forward commands would run as the mail system: ignored."""
    caplog.set_level(logging.WARNING, "postbus.delivery")
    other = next(u for u in (PASSWD_USER, "daemon") if pwd.getpwnam(u).pw_uid != os.geteuid())
    monkeypatch.setattr("delivery_local.expand.is_root", lambda: False)
    out = _out(mailroot)
    fwd = mailroot / "fwd"
    fwd.mkdir()
    _forward(fwd / other, f'"|touch {out}/ran"\n')
    (fwd / other).chmod(0o644)
    give(fwd / other, *uid_gid(other))
    await run_agent(main, "local", _settings(mailroot, forward_path=f"{fwd}/$user"))
    job = await bus.submit("local", "mail.postbus.test", [f"{other}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.reason) == ("sent", "delivered to maildir")
    assert not (out / "ran").exists()
    assert (f"{job.queue_id}: ignoring {fwd}/{other}: the local delivery agent is not root "
            f"and cannot deliver as user {other}") in [r.getMessage() for r in caplog.records]


async def test_unmatched_extensions_propagate_through_aliases_and_dotforward(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    (mailroot / "aliases").write_text("team bob, friend@remote.test\n")
    fwd = mailroot / "fwd"
    fwd.mkdir()
    _forward(fwd / USER, "pal@remote.test\n")
    settings = _settings(mailroot, alias_maps=f"texthash:{mailroot}/aliases",
                         forward_path=f"{fwd}/$user")
    for classes, want in (("canonical, virtual", ["bob", "friend@remote.test", "pal@remote.test"]),
                          ("alias, forward", ["bob+x", "friend+x@remote.test",
                                              "pal+y@remote.test"])):
        caplog.clear()
        await run_agent(main, "local", {**settings, "propagate_unmatched_extensions": classes})
        job = await bus.submit("local", "mail.postbus.test",
                               ["team+x@postbus.test", f"{USER}+y@postbus.test"])
        assert [r.status for r in (await bus.status(job.queue_id)).results] == ["sent", "sent"]
        logs = [r.getMessage() for r in caplog.records if job.queue_id in r.getMessage()]
        got = [line.split("to=<", 1)[1].split(">", 1)[0] for line in logs
               if "delivered to maildir" in line]
        for line in logs:
            if "forwarded as " in line:
                entry = await bus.store.queue.get(line.rsplit(" ", 1)[1].rstrip(")"))
                assert entry is not None
                got += [r.address for r in entry[0].recipients]
        assert sorted(got) == sorted([want[0] + "@postbus.test", *want[1:]]), logs
        await run_agent.stop()


async def test_local_command_shell_and_execution_directory(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    out = _out(mailroot)
    workdir = mailroot / "exec" / USER
    workdir.mkdir(parents=True)
    give(workdir, *uid_gid(USER))
    settings = _settings(
        mailroot, mailbox_command=f'echo "${{BASH_VERSION:+bash}}" > {out}/shell; pwd > {out}/cwd',
        local_command_shell="/bin/bash -c",
        command_execution_directory=f"{mailroot}/exec/$user")
    await run_agent(main, "local", settings)
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert result.status == "sent", result.reason
    assert (out / "shell").read_text() == "bash\n"
    assert (out / "cwd").read_text() == f"{workdir}\n"
    await run_agent.stop()
    # a directory the command cannot enter: Postfix's child dies with EX_TEMPFAIL
    await run_agent(main, "local", {
        **settings, "command_execution_directory": f"{mailroot}/missing/$user"})
    job = await bus.submit("local", "mail.postbus.test", [f"{USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    uid, gid = (ENTRY.pw_uid, ENTRY.pw_gid) if ROOT else (os.geteuid(), os.getegid())
    assert (result.status, result.dsn, result.reason) == (
        "deferred", "4.3.0", "temporary failure. Command output: local: fatal: cannot change "
        f'directory to "{mailroot}/missing/{USER}" for uid={uid} gid={gid}: '
        "No such file or directory ")


async def test_mailbox_and_fallback_transport_pass_the_recipient(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    """mailbox_transport: the local agent hands the recipient to the lmtp agent within the
    same attempt; the lmtp agent delivers it and reports; local reports nothing for it."""
    caplog.set_level(logging.INFO, "postbus.delivery")
    (mailroot / "aliases").write_text("team bob, carol\n")
    settings = _settings(mailroot, alias_maps=f"texthash:{mailroot}/aliases")
    with Peer(lmtp=True) as peer:
        await run_agent(smtp_main, "lmtp", {"myhostname": "mail.postbus.test"})
        await run_agent(main, "local", {
            **settings, "mailbox_transport": f"lmtp:inet:127.0.0.1:{peer.port}"})
        job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"])
        statuses = {st.transport: st for st in await _statuses(bus, job.queue_id, 2)}
        assert statuses["local"].results == [] and not statuses["local"].whole
        lmtp = statuses["lmtp"]
        assert lmtp.nexthop == f"inet:127.0.0.1:{peer.port}"
        assert [(r.index, r.status) for r in lmtp.results] == [(0, "sent")]
        [(sender, rcpts, content)] = peer.handler.messages
        assert (sender, rcpts) == ("alice@postbus.test", ["bob@postbus.test"])
        assert b"Subject: hello" in content
        logs = [r.getMessage() for r in caplog.records]
        assert f"{job.queue_id}: passing <bob@postbus.test> to transport=lmtp" in logs
        assert not any("to=<bob@postbus.test>, relay=local" in line for line in logs)
        # an alias member is not the job's recipient: forwarded, it comes back on its own
        job = await bus.submit("local", "mail.postbus.test", ["team@postbus.test"])
        [team] = (await bus.status(job.queue_id)).results
        assert (team.status, team.reason[:13]) == ("sent", "forwarded as ")
        got = await bus.store.queue.get(team.reason.rsplit(" ", 1)[1])
        assert got is not None
        assert sorted(r.address for r in got[0].recipients) == [
            "bob@postbus.test", "carol@postbus.test"]
    await run_agent.stop()
    # fallback_transport takes unknown users only; a transport master.cf lacks defers
    await run_agent(main, "local", {**settings, "fallback_transport": "nosuch"})
    job = await bus.submit("local", "mail.postbus.test",
                           ["nobody9@postbus.test", "bob@postbus.test"])
    nobody, bob = (await bus.status(job.queue_id)).results
    assert (nobody.status, nobody.dsn, nobody.reason) == (
        "deferred", "4.3.0", "mail transport unavailable")
    assert (bob.status, bob.reason) == ("sent", "delivered to maildir")
