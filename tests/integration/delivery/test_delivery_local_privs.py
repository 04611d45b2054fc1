"""Whose rights delivery-local writes with (the suite runs as root in CI).

As root: a passwd user's mailbox is written as that user (Postfix's spool
rules for mbox), a table user's as mail_owner, an alias command or file as
default_privs (or the owner of an :include: file), a virtual mailbox as
virtual_uid_maps/virtual_gid_maps. Not as root, every case writes as the
agent itself, and the tests check that instead.
"""

from __future__ import annotations

import grp
import logging
import os
import re
from pathlib import Path

import pytest

from delivery_local.__main__ import main

from .conftest import Bus, RunAgent
from .localfs import (
    MAIL_OWNER,
    PASSWD_USER,
    ROOT,
    VIRTUAL_ID,
    give,
    mailroot,
    owner_of,
    uid_gid,
)

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture

CONFIG_ERROR = ("deferred", "4.3.5", "mail system configuration error")
ME = (os.geteuid(), os.getegid())


def _settings(root: Path, **extra: str) -> dict[str, str]:
    (root / "users").write_text("bob ok\n")
    return {
        "myhostname": "mail.postbus.test",
        "mydomain": "postbus.test",
        "myorigin": "postbus.test",
        "home_mailbox": "",
        "alias_maps": "",
        "local_recipient_maps": f"texthash:{root}/users",
        "mail_owner": MAIL_OWNER,
        **extra,
    }


def _fs_ids() -> set[tuple[str, str]]:
    """The file-system uid and gid of every thread of this process (from /proc)."""
    ids = set()
    for task in os.listdir("/proc/self/task"):
        status = Path(f"/proc/self/task/{task}/status").read_text()
        uid = re.search(r"^Uid:\s+\S+\s+\S+\s+\S+\s+(\S+)", status, re.M)
        gid = re.search(r"^Gid:\s+\S+\s+\S+\s+\S+\s+(\S+)", status, re.M)
        assert uid and gid
        ids.add((uid.group(1), gid.group(1)))
    return ids


def _owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


async def test_passwd_user_mailboxes_follow_postfix_spool_rules(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    mail_gid = grp.getgrnam("mail").gr_gid
    spools = {"plain": 0o755, "group": 0o775, "world": 0o1777}
    for name, mode in spools.items():
        (mailroot / name).mkdir()
        (mailroot / name).chmod(mode)
        give(mailroot / name, 0, mail_gid)
    for name in spools:  # one mbox spool at a time
        await run_agent(main, "local", _settings(
            mailroot, mail_spool_directory=str(mailroot / name)))
        job = await bus.submit("local", "mail.postbus.test", [f"{PASSWD_USER}@postbus.test"])
        [result] = (await bus.status(job.queue_id)).results
        assert (result.status, result.reason) == ("sent", "delivered to mailbox"), name
        await run_agent.stop()
    uid, gid = uid_gid(PASSWD_USER)
    want = {  # root creates and chowns; the user with the spool's group; the user
        "plain": (uid, gid), "group": (uid, mail_gid), "world": (uid, gid),
    } if ROOT else dict.fromkeys(spools, ME)
    for name in spools:
        box = mailroot / name / PASSWD_USER
        assert (_owner(box), box.stat().st_mode & 0o777) == (want[name], 0o600), name
    if ROOT:  # every thread of this process has switched back
        assert _fs_ids() == {("0", "0")}


async def test_passwd_user_maildir_is_written_as_the_user(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    (mailroot / "open").mkdir(mode=0o1777)
    (mailroot / "open").chmod(0o1777)
    (mailroot / "closed").mkdir(mode=0o755)
    await run_agent(main, "local", _settings(mailroot, mail_spool_directory=f"{mailroot}/open/"))
    job = await bus.submit("local", "mail.postbus.test", [f"{PASSWD_USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.reason) == ("sent", "delivered to maildir")
    box = mailroot / "open" / PASSWD_USER
    [message] = list((box / "new").iterdir())
    assert _owner(box) == _owner(message) == owner_of(PASSWD_USER)
    await run_agent.stop()
    # a spool the user cannot write: the agent has no root rights left to lend
    await run_agent(main, "local", _settings(mailroot, mail_spool_directory=f"{mailroot}/closed/"))
    job = await bus.submit("local", "mail.postbus.test", [f"{PASSWD_USER}@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    if ROOT:
        assert (result.status, result.dsn) == ("bounced", "5.2.0")
        assert re.fullmatch(
            rf"maildir delivery failed: create maildir file {mailroot}/closed/{PASSWD_USER}/tmp/"
            r"\d+\.\S+: Permission denied", result.reason
        ), result.reason
        assert os.listdir(mailroot / "closed") == []
    else:
        assert (result.status, result.reason) == ("sent", "delivered to maildir")


async def test_alias_commands_and_files_run_as_default_privs(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    out = mailroot / "out"
    out.mkdir()
    out.chmod(0o1777)
    (mailroot / "aliases").write_text(
        f'run "|id -u > {out}/ids; id -g >> {out}/ids; id -G >> {out}/ids"\n'
        f"keep {out}/kept\n"
    )
    await run_agent(main, "local", _settings(mailroot, alias_maps=f"texthash:{mailroot}/aliases"))
    job = await bus.submit("local", "mail.postbus.test", ["run@postbus.test", "keep@postbus.test"])
    run, keep = (await bus.status(job.queue_id)).results
    assert (run.status, keep.status) == ("sent", "sent")
    assert keep.reason == f"delivered to file: {out}/kept"
    uid, gid = owner_of("nobody")
    ids = (out / "ids").read_text().split("\n")
    assert ids[:2] == [str(uid), str(gid)]
    if ROOT:  # and none of root's supplementary groups
        assert ids[2] == str(gid)
    assert _owner(out / "kept") == (uid, gid)


async def test_privileged_or_shared_accounts_are_configuration_errors(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    (mailroot / "aliases").write_text(f'run "|touch {mailroot}/ran"\n')
    await run_agent(main, "local", _settings(
        mailroot, alias_maps=f"texthash:{mailroot}/aliases", default_privs="root",
        mail_spool_directory=f"{mailroot}/mail/",
    ))
    job = await bus.submit("local", "mail.postbus.test", ["run@postbus.test", "bob@postbus.test"])
    run, bob = (await bus.status(job.queue_id)).results
    warnings = [r.getMessage() for r in caplog.records]
    if ROOT:  # a command never runs as root; mail_owner must not be default_privs either
        assert (run.status, run.dsn, run.reason) == CONFIG_ERROR
        assert (bob.status, bob.dsn, bob.reason) == CONFIG_ERROR
        assert ("file /etc/postbus/main.cf: parameter default_privs: user root has privileged "
                "user ID") in warnings
        assert not (mailroot / "ran").exists()
    else:
        assert (run.status, bob.status) == ("sent", "sent")
    await run_agent.stop()
    await run_agent(main, "local", _settings(
        mailroot, mail_owner="nobody", mail_spool_directory=f"{mailroot}/mail/"))
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"])
    [bob] = (await bus.status(job.queue_id)).results
    if ROOT:
        assert (bob.status, bob.dsn, bob.reason) == CONFIG_ERROR
        assert ("file /etc/postbus/main.cf: parameters default_privs and mail_owner specify "
                "the same user nobody") in [r.getMessage() for r in caplog.records]
    else:
        assert bob.status == "sent"


async def test_include_files_are_their_own_class_with_their_owners_rights(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    out = mailroot / "out"
    out.mkdir()
    out.chmod(0o1777)
    included = mailroot / "list.inc"
    included.write_text(f'"|id -u > {out}/inc"\n')
    give(included, *uid_gid(PASSWD_USER))
    loose = mailroot / "loose.inc"
    loose.write_text("bob\n")
    loose.chmod(0o666)
    (mailroot / "aliases").write_text(f"list :include:{included}\nloose :include:{loose}\n")
    for allow in ("alias, forward", "alias, include"):
        await run_agent(main, "local", _settings(
            mailroot, alias_maps=f"texthash:{mailroot}/aliases", allow_mail_to_commands=allow,
            mail_spool_directory=f"{mailroot}/mail/",
        ))
        job = await bus.submit("local", "mail.postbus.test",
                               ["list@postbus.test", "loose@postbus.test"])
        listed, loose_result = (await bus.status(job.queue_id)).results
        assert (loose_result.status, loose_result.dsn, loose_result.reason) == (
            "bounced", "5.3.5", "mail system configuration error")
        if allow == "alias, forward":  # Postfix's default: no commands from :include: files
            assert (listed.status, listed.dsn, listed.reason) == (
                "bounced", "5.7.1", "mail to command is restricted")
            assert not (out / "inc").exists()
        else:
            assert listed.status == "sent"
        await run_agent.stop()
    assert (out / "inc").read_text() == f"{owner_of(PASSWD_USER)[0]}\n"
    assert f":include: file {loose} is world writable" in [r.getMessage() for r in caplog.records]


async def test_virtual_mailboxes_get_virtual_uid_maps_rights(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    base = mailroot / "vmail"
    base.mkdir(mode=0o1777)
    base.chmod(0o1777)
    (mailroot / "vmailbox").write_text("".join(
        f"{u}@virt.test virt.test/{u}/\n" for u in ("ok", "low", "rootgid", "nouid")))
    (mailroot / "uids").write_text(f"ok@virt.test {VIRTUAL_ID}\nlow@virt.test 50\n"
                                   f"rootgid@virt.test {VIRTUAL_ID}\n")
    (mailroot / "gids").write_text(f"@virt.test {VIRTUAL_ID}\nrootgid@virt.test 0\n")
    await run_agent(main, "virtual", _settings(
        mailroot, virtual_mailbox_base=str(base),
        virtual_mailbox_maps=f"texthash:{mailroot}/vmailbox",
        virtual_uid_maps=f"texthash:{mailroot}/uids",
        virtual_gid_maps=f"texthash:{mailroot}/gids",
    ))
    job = await bus.submit("virtual", "virt.test", [
        "ok@virt.test", "low@virt.test", "rootgid@virt.test", "nouid@virt.test"])
    ok, low, rootgid, nouid = (await bus.status(job.queue_id)).results
    assert (ok.status, ok.reason) == ("sent", "delivered to maildir")
    [message] = list((base / "virt.test" / "ok" / "new").iterdir())
    assert _owner(message) == ((VIRTUAL_ID, VIRTUAL_ID) if ROOT else ME)
    # Postfix's checks: below virtual_minimum_uid (100), gid 0, no uid at all (as root)
    assert (low.status, low.dsn, low.reason) == CONFIG_ERROR
    assert (rootgid.status, rootgid.dsn, rootgid.reason) == CONFIG_ERROR
    assert (nouid.status, nouid.dsn, nouid.reason) == (
        CONFIG_ERROR if ROOT else ("sent", "2.0.0", "delivered to maildir"))
    warnings = [r.getMessage() for r in caplog.records]
    assert "recipient low@virt.test: bad uid 50 in virtual_uid_maps" in warnings
    assert "recipient rootgid@virt.test: bad gid 0 in virtual_gid_maps" in warnings
    assert sorted(os.listdir(base / "virt.test")) == (["ok"] if ROOT else ["nouid", "ok"])


@pytest.mark.parametrize("strict", ["yes", "no"])
async def test_strict_mailbox_ownership(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog, strict: str
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    spool = mailroot / "spool"
    spool.mkdir()
    (spool / "bob").write_bytes(b"")  # root's (or ours), not mail_owner's
    (spool / "bob").chmod(0o666)
    await run_agent(main, "local", _settings(
        mailroot, mail_spool_directory=str(spool), strict_mailbox_ownership=strict))
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    if ROOT and strict == "yes":
        assert (result.status, result.dsn, result.reason) == (
            "deferred", "4.2.0", f"cannot update mailbox {spool}/bob for user bob. "
                                 f"destination {spool}/bob is not owned by recipient")
        assert ('specify "strict_mailbox_ownership = no" to ignore mailbox ownership mismatch'
                in [r.getMessage() for r in caplog.records])
        assert (spool / "bob").read_bytes() == b""
    else:
        assert (result.status, result.reason) == ("sent", "delivered to mailbox")
        assert (spool / "bob").read_bytes().startswith(b"From alice@postbus.test  ")
