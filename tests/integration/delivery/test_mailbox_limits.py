"""virtual_mailbox_limit and mailbox_size_limit: a delivery that would take a file past the
limit bounces 5.2.2 with Postfix's text (its write fails with EFBIG under setrlimit), and the
mailbox is left exactly as it was.

A private Postfix's virtual(8) delivers to an mbox until one delivery would
pass virtual_mailbox_limit; its outcome for that one (recorded in
``tests/data/postfix/mailbox_limit.json``) is what ours must give."""

from __future__ import annotations

import re
import shutil
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest

from delivery_local.__main__ import main
from delivery_local.store import file_limit
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.recorded import Recording

from .conftest import MESSAGE, Bus, RunAgent
from .localfs import MAIL_OWNER, VIRTUAL_ID, give, mailroot

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture

TOO_LARGE = "error writing message: File too large"
RECORDING = Recording("mailbox_limit")
_STATUS = re.compile(r"to=<box@virt\.test>, relay=virtual, .*dsn=(\S+), status=(\w+) \((.*)\)$",
                     re.M)


def _postfix_past_the_limit() -> dict[str, Any]:
    """Postfix's virtual(8): deliveries to one mbox until one would pass the limit."""
    port = free_port()
    instance = postfix_instance.PostfixInstance(port, {
        "virtual_mailbox_domains": "virt.test",
        "virtual_mailbox_maps": "inline:{box@virt.test=box}",
        "virtual_uid_maps": f"static:{VIRTUAL_ID}", "virtual_gid_maps": f"static:{VIRTUAL_ID}",
        "virtual_minimum_uid": "100", "message_size_limit": "1000",
        "virtual_mailbox_limit": "1500",
    })
    base = instance.root / "vmail"
    base.mkdir()
    shutil.chown(base, VIRTUAL_ID, VIRTUAL_ID)
    (instance.etc / "main.cf").write_text(
        (instance.etc / "main.cf").read_text() + f"virtual_mailbox_base = {base}\n")
    box = base / "box"
    instance.start()
    try:
        wait_port("127.0.0.1", port, 20)
        for n in range(1, 6):
            before = box.read_bytes() if box.exists() else b""
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("", ["box@virt.test"], b"Subject: limit\r\n\r\nbody\r\n")
            deadline = time.monotonic() + 30
            while len(found := _STATUS.findall(instance.maillog.read_text()
                                               if instance.maillog.exists() else "")) < n:
                assert time.monotonic() < deadline, "Postfix logged no delivery"
                time.sleep(0.05)
            dsn, status, reason = found[-1]
            if status != "sent":
                return {"dsn": dsn, "status": status, "reason": reason.replace(str(base), "BASE"),
                        "unchanged": box.read_bytes() == before, "deliveries": n}
        raise AssertionError("no delivery went past the limit")
    finally:
        instance.stop()


def test_past_the_limit_as_postfix(tmp_path: Path) -> None:
    """Postfix's answer (live or recorded): the words our tests below expect."""
    live = _postfix_past_the_limit if postfix_instance.available() else None
    postfix = RECORDING.answer("virtual_mbox", live)
    assert postfix == {"dsn": "5.2.2", "status": "bounced", "unchanged": True,
                       "deliveries": postfix["deliveries"],
                       "reason": f"delivery failed to mailbox BASE/box: {TOO_LARGE}"}
    assert postfix["deliveries"] > 1


def _virtual(root: Path, limit: str) -> dict[str, str]:
    base = root / "vmail"
    base.mkdir()
    give(base, VIRTUAL_ID, VIRTUAL_ID)
    (root / "vmailbox").write_text("box@virt.test box\nmd@virt.test md/\n")
    return {
        "myhostname": "mail.postbus.test", "mail_owner": MAIL_OWNER,
        "virtual_mailbox_base": str(base), "virtual_mailbox_maps": f"texthash:{root}/vmailbox",
        "virtual_uid_maps": f"static:{VIRTUAL_ID}", "virtual_gid_maps": f"static:{VIRTUAL_ID}",
        "message_size_limit": "500", "virtual_mailbox_limit": limit,
    }


async def test_virtual_mbox_past_the_limit_bounces_and_is_unchanged(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    await run_agent(main, "virtual", _virtual(mailroot, "1000"))
    box = mailroot / "vmail" / "box"
    sizes = []
    for _ in range(2):
        job = await bus.submit("virtual", "virt.test", ["box@virt.test"])
        [result] = (await bus.status(job.queue_id)).results
        assert (result.status, result.dsn, result.reason) == ("sent", "2.0.0",
                                                              "delivered to mailbox")
        sizes.append(box.stat().st_size)
    assert sizes[1] == 2 * sizes[0] and sizes[1] <= 1000 < sizes[1] + sizes[0]
    before = box.read_bytes()
    job = await bus.submit("virtual", "virt.test", ["box@virt.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == (
        "bounced", "5.2.2", f"delivery failed to mailbox {box}: {TOO_LARGE}"
    )
    assert box.read_bytes() == before


async def test_virtual_maildir_file_past_the_limit_bounces(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    await run_agent(main, "virtual", _virtual(mailroot, "500"))
    small = await bus.submit("virtual", "virt.test", ["md@virt.test"])
    [ok] = (await bus.status(small.queue_id)).results
    assert (ok.status, ok.reason) == ("sent", "delivered to maildir")
    # Return-Path: and Delivered-To: take this one past 500 octets
    big = MESSAGE + b"x" * (480 - len(MESSAGE)) + b"\r\n"
    job = await bus.submit("virtual", "virt.test", ["md@virt.test"], content=big)
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == (
        "bounced", "5.2.2", f"maildir delivery failed: {TOO_LARGE}"
    )
    md = mailroot / "vmail" / "md"
    assert len(list((md / "new").iterdir())) == 1
    assert list((md / "tmp").iterdir()) == []


async def test_local_mbox_past_mailbox_size_limit_bounces(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    (mailroot / "users").write_text("bob ok\n")
    (mailroot / "spool").mkdir()
    await run_agent(main, "local", {
        "myhostname": "mail.postbus.test", "mydomain": "postbus.test",
        "mail_spool_directory": f"{mailroot}/spool", "home_mailbox": "", "alias_maps": "",
        "local_recipient_maps": f"texthash:{mailroot}/users", "mail_owner": MAIL_OWNER,
        "message_size_limit": "500", "mailbox_size_limit": "700",
    })
    box = mailroot / "spool" / "bob"
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"])
    assert (await bus.status(job.queue_id)).results[0].status == "sent"
    before = box.read_bytes()
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == (
        "bounced", "5.2.2", f"cannot update mailbox {box} for user bob. {TOO_LARGE}"
    )
    assert box.read_bytes() == before


@pytest.mark.parametrize(("settings", "virtual", "error"), [
    ("mailbox_size_limit = 1000\nmessage_size_limit = 2000\n", False,
     "configuration error: mailbox_size_limit is smaller than message_size_limit"),
    ("virtual_mailbox_limit = 1000\nmessage_size_limit = 0\n", True,
     "configuration error: virtual_mailbox_limit is limited but message_size_limit is "
     "unlimited"),
])
def test_a_limit_below_message_size_limit_is_refused(
    settings: str, virtual: bool, error: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        file_limit(Config.from_text(settings), virtual)
    assert str(caught.value) == error


def test_limits_as_postfix_reads_them() -> None:
    assert file_limit(Config.from_text(""), False) == 51200000
    assert file_limit(Config.from_text("virtual_mailbox_limit = 0\n"), True) == 0


async def test_alias_files_and_commands_are_bounded_by_mailbox_size_limit(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    """Postfix: the limit holds for any file local delivery writes, commands' files too."""
    out = mailroot / "out"
    out.mkdir()
    out.chmod(0o1777)  # written as default_privs
    (mailroot / "aliases").write_text(
        f"box {out}/box.mbox\n"
        f'big "|cat >/dev/null; head -c 5000 /dev/zero >{out}/big"\n'
    )
    await run_agent(main, "local", {
        "myhostname": "mail.postbus.test", "mydomain": "postbus.test", "home_mailbox": "",
        "mail_spool_directory": f"{mailroot}/spool", "mail_owner": MAIL_OWNER,
        "alias_maps": f"texthash:{mailroot}/aliases", "local_recipient_maps": "",
        "message_size_limit": "500", "mailbox_size_limit": "700",
    })
    first = await bus.submit("local", "mail.postbus.test", ["box@postbus.test"])
    assert (await bus.status(first.queue_id)).results[0].status == "sent"
    before = (out / "box.mbox").read_bytes()
    job = await bus.submit("local", "mail.postbus.test", ["box@postbus.test", "big@postbus.test"])
    box, big = (await bus.status(job.queue_id)).results
    assert (box.status, box.dsn, box.reason) == (
        "bounced", "5.2.2", f"cannot append message to file {out}/box.mbox: {TOO_LARGE}")
    assert (out / "box.mbox").read_bytes() == before
    assert big.status == "bounced" and big.reason.startswith("Command died with "), big
    assert (out / "big").stat().st_size == 700  # written up to the limit, not past it
