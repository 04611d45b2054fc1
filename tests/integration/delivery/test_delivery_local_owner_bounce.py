"""Which bounces local(8) reports to an ``owner-`` alias (``bounce_to`` of the result),
as Postfix's bounce_workaround(): a failed ``|command`` or mbox ``/file`` delivery and a
forwarding loop of an address that has an ``owner-<name>`` alias (or one for the name
without its extension); never a deferral, a Maildir, an ``:include:`` failure, nor
anything without the owner alias or with ``owner_request_special = no``. The end-to-end
test (tests/e2e/test_local_owner_bounce.py) follows the notices to a live Postfix's."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery_local.__main__ import main

from .conftest import MESSAGE, Bus, RunAgent
from .localfs import MAIL_OWNER, mailroot

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture

ALIASES = """\
cmdlist |"exit 67"
owner-cmdlist boss@remote.test
later |"exit 75"
owner-later boss@remote.test
filelist /nonexistent/postbus/dir/file
owner-filelist boss@remote.test
mdlist /nonexistent/postbus/dir/md/
owner-mdlist boss@remote.test
inclist :include:/nonexistent/postbus/list
owner-inclist boss@remote.test
plaincmd |"exit 67"
mixed |"exit 67", :include:/nonexistent/postbus/list
owner-mixed boss@remote.test
looplist friend@remote.test
owner-looplist boss@remote.test
"""


def _settings(root: Path, **extra: str) -> dict[str, str]:
    (root / "aliases").write_text(ALIASES)
    return {
        "myhostname": "mail.postbus.test", "mydomain": "postbus.test",
        "myorigin": "postbus.test", "mydestination": "postbus.test",
        "alias_maps": f"texthash:{root}/aliases", "local_recipient_maps": "",
        "mail_owner": MAIL_OWNER, "recipient_delimiter": "+",
        "allow_mail_to_files": "alias", "allow_mail_to_commands": "alias", **extra,
    }


NAMES = ["cmdlist", "cmdlist+tag", "later", "filelist", "mdlist", "inclist", "plaincmd",
         "mixed"]


@pytest.mark.parametrize(("settings", "owner"), [
    ({}, "owner-cmdlist@postbus.test"),
    ({"expand_owner_alias": "yes"}, "boss@remote.test"),
])
async def test_which_bounces_go_to_the_owner(
    bus: Bus, run_agent: RunAgent, mailroot: Path, settings: dict[str, str], owner: str
) -> None:
    await run_agent(main, "local", _settings(mailroot, **settings))
    job = await bus.submit("local", "postbus.test", [f"{n}@postbus.test" for n in NAMES])
    results = (await bus.status(job.queue_id)).results
    got = {n: (r.status, r.bounce_to) for n, r in zip(NAMES, results, strict=True)}
    file_owner = owner.replace("cmdlist", "filelist")
    assert got == {
        "cmdlist": ("bounced", owner),
        "cmdlist+tag": ("bounced", owner),  # owner-cmdlist+tag: none, owner-cmdlist: found
        "later": ("deferred", ""),  # a deferral stays the sender's (defer_append)
        "filelist": ("bounced", file_owner),
        "mdlist": (got["mdlist"][0], ""),  # a Maildir's failure is the sender's (maildir.c)
        "inclist": ("bounced", ""),  # include.c bounces to the sender, owner or not
        "plaincmd": ("bounced", ""),
        "mixed": ("bounced", ""),  # one notice address per recipient: the sender's first
    }


async def test_no_owner_notices_without_owner_request_special(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    await run_agent(main, "local", _settings(mailroot, owner_request_special="no"))
    job = await bus.submit("local", "postbus.test", ["cmdlist@postbus.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.bounce_to) == ("bounced", "5.1.1", "")


async def test_a_forwarding_loop_goes_to_the_owner(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    await run_agent(main, "local", _settings(mailroot))
    looped = b"Delivered-To: looplist@postbus.test\r\n" + MESSAGE
    job = await bus.submit("local", "postbus.test",
                           ["looplist@postbus.test", "plaincmd@postbus.test"], looped)
    loop, other = (await bus.status(job.queue_id)).results
    assert (loop.status, loop.dsn, loop.reason, loop.bounce_to) == (
        "bounced", "5.4.6", "mail forwarding loop for looplist@postbus.test",
        "owner-looplist@postbus.test")
    assert (other.status, other.bounce_to) == ("bounced", "")
