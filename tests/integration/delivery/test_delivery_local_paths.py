"""Issue #7: no local part, table value or link makes delivery-local write outside its base.

Each traversal form goes to local (Maildir and mbox spool) and virtual
(Maildir and mbox, through a regexp map that copies the local part into the
path, and a table with escaping values) delivery; the outcome is the one
Postfix gives (5.1.1 unknown user, 4.3.5 configuration error), and a
snapshot of the whole test tree shows that nothing changed outside the base.
Links at the destination are never followed.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import pytest

from delivery_local.__main__ import main

from .conftest import Bus, RunAgent
from .localfs import MAIL_OWNER, VIRTUAL_ID, changed, give, mailroot, snapshot, uid_gid

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture

ABSOLUTE = f"/tmp/postbus-issue7-{uuid.uuid4().hex[:12]}"
#: local part -> the name in Postfix's "unknown user" text (lower case, controls as ?)
FORMS = {
    f"{ABSOLUTE}/x": f"{ABSOLUTE}/x",
    f"{ABSOLUTE.upper()}/X": f"{ABSOLUTE}/x",
    "../../../escaped": "../../../escaped",
    "../../../ESCAPED": "../../../escaped",
    '"../x"': '"../x"',
    "..\\/..\\/x": "..\\/..\\/x",
    "..\\x": "..\\x",
    "..": "..",
    ".hidden": ".hidden",
    "a\x00b": "a?b",
    "a\x01b": "a?b",
    "tab\tx": "tab?x",
    "del\x7f": "del?",
    "a" * 300: "a" * 300,
    "../evil": "../evil",  # listed in the users table: still never a mailbox name
    "a\\..\\b": "a\\..\\b",  # a harmless name, but nobody's
}
USERS = ["bob", "../evil", ".dot", "a/b"]
CONFIG_ERROR = ("deferred", "4.3.5", "mail system configuration error")


def _settings(root: Path, users: list[str] = USERS, **extra: str) -> dict[str, str]:
    (root / "users").write_text("".join(f"{user} ok\n" for user in users))
    return {
        "myhostname": "mail.postbus.test",
        "mydomain": "postbus.test",
        "myorigin": "postbus.test",
        "home_mailbox": "",
        "alias_maps": "",
        "local_recipient_maps": f"texthash:{root}/users",
        "mail_owner": MAIL_OWNER,
        "mail_spool_directory": f"{root}/a/b/c/mail/",
        **extra,
    }


def _spool(root: Path, name: str) -> Path:
    spool = root / "a" / "b" / "c" / name
    spool.mkdir(parents=True)
    give(spool, *uid_gid(MAIL_OWNER))
    for parent in (root / "a", root / "a" / "b", root / "a" / "b" / "c"):
        parent.chmod(0o755)
    return spool


def _outside(before: dict[str, tuple[int, int, bytes]], root: Path, *inside: str) -> set[str]:
    """Paths that changed under ``root`` but not below one of ``inside``."""
    return {p for p in changed(before, snapshot(root))
            if not any(p == i or p.startswith(i + "/") for i in inside)}


@pytest.mark.parametrize("spool_name", ["mail/", "spool"])
async def test_local_traversal_forms_are_unknown_users(
    bus: Bus, run_agent: RunAgent, mailroot: Path, spool_name: str
) -> None:
    spool = _spool(mailroot, spool_name.rstrip("/"))
    settings = _settings(
        mailroot, mail_spool_directory=f"{spool}{'/' if spool_name.endswith('/') else ''}"
    )
    before = snapshot(mailroot)
    await run_agent(main, "local", settings)
    forms = list(FORMS)
    job = await bus.submit("local", "mail.postbus.test", [f"{f}@postbus.test" for f in forms]
                           + ["BOB@postbus.test"])
    *results, bob = (await bus.status(job.queue_id)).results
    for form, result in zip(forms, results, strict=True):
        assert (result.status, result.dsn, result.reason) == (
            "bounced", "5.1.1", f'unknown user: "{FORMS[form]}"'
        ), form
    assert (bob.status, bob.dsn) == ("sent", "2.0.0")
    inside = os.path.relpath(spool / "bob", mailroot)
    assert _outside(before, mailroot, inside) == set()
    assert os.listdir(spool) == ["bob"]
    assert not os.path.exists(ABSOLUTE)


async def test_local_unknown_users_bounce_without_a_table(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    spool = _spool(mailroot, "mail")
    await run_agent(main, "local", _settings(mailroot, local_recipient_maps=""))
    job = await bus.submit("local", "mail.postbus.test", ["nosuchuser@postbus.test", "bob@x"])
    nosuch, bob = (await bus.status(job.queue_id)).results
    assert (nosuch.status, nosuch.dsn, nosuch.reason) == (
        "bounced", "5.1.1", 'unknown user: "nosuchuser"'
    )
    assert (bob.status, bob.reason) == ("bounced", 'unknown user: "bob"')  # only in a table
    assert os.listdir(spool) == []


@pytest.mark.parametrize("maildir", [True, False])
async def test_virtual_regexp_paths_stay_under_the_base(
    bus: Bus, run_agent: RunAgent, mailroot: Path, maildir: bool
) -> None:
    base = _spool(mailroot, "vmail")
    give(base, VIRTUAL_ID, VIRTUAL_ID)
    (mailroot / "vmailbox").write_text(
        "/^(.*)@virt\\.test$/ virt.test/${1}/\n" if maildir else "/^(.*)@virt\\.test$/ ${1}\n"
    )
    settings = _settings(
        mailroot, virtual_mailbox_base=str(base),
        virtual_mailbox_maps=f"regexp:{mailroot}/vmailbox",
        virtual_uid_maps=f"static:{VIRTUAL_ID}", virtual_gid_maps=f"static:{VIRTUAL_ID}",
    )
    before = snapshot(mailroot)
    await run_agent(main, "virtual", settings)
    forms = list(FORMS)
    job = await bus.submit("virtual", "virt.test", [f"{f}@virt.test" for f in forms])
    results = (await bus.status(job.queue_id)).results
    got = {form: (r.status, r.dsn) for form, r in zip(forms, results, strict=True)}
    escapes = {"../../../escaped", "../../../ESCAPED", "..", "a\x00b", "a\x01b", "tab\tx",
               "del\x7f", "a" * 300, "../evil"}
    absolute = {f"{ABSOLUTE}/x", f"{ABSOLUTE.upper()}/X"}
    below = {'"../x"', "..\\/..\\/x"}  # a/b below the base: "\"..", "x\"", "..\\"
    if maildir:  # virt.test/<local part>/: Postfix keeps even "/tmp/x" under the base
        want = dict.fromkeys(escapes, CONFIG_ERROR[:2]) | dict.fromkeys(
            set(forms) - escapes, ("sent", "2.0.0"))
    else:  # <local part>: absolute is refused; an mbox below a missing directory waits
        want = dict.fromkeys(escapes | absolute, CONFIG_ERROR[:2]) | dict.fromkeys(
            below, ("deferred", "4.2.0")) | dict.fromkeys(
            set(forms) - escapes - absolute - below, ("sent", "2.0.0"))
    assert got == want
    assert _outside(before, mailroot, os.path.relpath(base, mailroot)) == set()
    assert not os.path.exists(ABSOLUTE)


async def test_virtual_table_values_that_escape_defer_with_a_warning(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    base = _spool(mailroot, "vmail")
    give(base, VIRTUAL_ID, VIRTUAL_ID)
    values = {"up": "../up/", "abs": f"{ABSOLUTE}/abs/", "mid": "virt.test/../../mid/",
              "mbox": "../../../../mbox", "ok": "virt.test/./ok/"}
    (mailroot / "vmailbox").write_text("".join(f"{k}@virt.test {v}\n" for k, v in values.items()))
    settings = _settings(
        mailroot, virtual_mailbox_base=str(base),
        virtual_mailbox_maps=f"texthash:{mailroot}/vmailbox",
        virtual_uid_maps=f"static:{VIRTUAL_ID}", virtual_gid_maps=f"static:{VIRTUAL_ID}",
    )
    before = snapshot(mailroot)
    await run_agent(main, "virtual", settings)
    job = await bus.submit("virtual", "virt.test", [f"{k}@virt.test" for k in values])
    *bad, ok = (await bus.status(job.queue_id)).results
    for key, result in zip(values, bad, strict=False):
        assert (result.status, result.dsn, result.reason) == CONFIG_ERROR, key
        warning = (f"recipient {key}@virt.test: bad mailbox path {values[key]} "
                   "in virtual_mailbox_maps")
        assert warning in [r.getMessage() for r in caplog.records], key
    assert (ok.status, ok.reason) == ("sent", "delivered to maildir")
    assert len(os.listdir(base / "virt.test" / "ok" / "new")) == 1
    assert _outside(before, mailroot, os.path.relpath(base, mailroot)) == set()
    assert not os.path.exists(ABSOLUTE)


@pytest.mark.parametrize("home_mailbox", ["../escape/", f"{ABSOLUTE}/abs/", "Mail/../../x"],
                         ids=["../escape/", "ABSOLUTE/abs/", "Mail/../../x"])  # same in each worker
async def test_home_mailbox_must_stay_in_the_home(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog, home_mailbox: str
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    await run_agent(main, "local", _settings(mailroot, home_mailbox=home_mailbox))
    job = await bus.submit("local", "mail.postbus.test", ["bin@postbus.test"])  # passwd user
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.reason) == CONFIG_ERROR
    assert (f'home_mailbox = {home_mailbox}: specify a path relative to the home directory, '
            'without ".."') in [r.getMessage() for r in caplog.records]
    assert not os.path.exists(ABSOLUTE)


# -- links at the destination ------------------------------------------------------------


async def test_mbox_links_are_not_followed(bus: Bus, run_agent: RunAgent, mailroot: Path) -> None:
    spool = _spool(mailroot, "spool")
    target = mailroot / "target"
    target.write_bytes(b"precious\n")
    (spool / "bob").symlink_to(target)
    (spool / "carol").symlink_to(mailroot / "dangling")
    os.link(target, spool / "dave")
    (spool / "erin").mkdir()
    await run_agent(main, "local", _settings(
        mailroot, ["bob", "carol", "dave", "erin"], mail_spool_directory=str(spool)
    ))
    job = await bus.submit("local", "mail.postbus.test",
                           ["bob@postbus.test", "carol@postbus.test", "dave@postbus.test",
                            "erin@postbus.test"])
    bob, carol, dave, erin = (await bus.status(job.queue_id)).results
    for user, result, why in (
        ("bob", bob, "file is a symbolic link"),
        ("carol", carol, "file is a symbolic link"),
        ("dave", dave, "file has 2 hard links"),
        ("erin", erin, "cannot open file: Is a directory"),
    ):
        assert (result.status, result.dsn, result.reason) == (
            "bounced", "5.2.0", f"cannot update mailbox {spool}/{user} for user {user}. {why}"
        )
    assert target.read_bytes() == b"precious\n"
    assert not (mailroot / "dangling").exists() and not os.listdir(spool / "erin")


async def test_maildir_links_are_not_followed(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    spool = _spool(mailroot, "mail")
    elsewhere = mailroot / "elsewhere"
    elsewhere.mkdir()
    (spool / "bob").symlink_to(elsewhere, target_is_directory=True)
    carol = spool / "carol"
    for sub in ("tmp", "cur"):
        (carol / sub).mkdir(parents=True)
    (carol / "new").symlink_to(elsewhere, target_is_directory=True)
    for path in (carol, carol / "tmp", carol / "cur"):
        give(path, *uid_gid(MAIL_OWNER))
    await run_agent(main, "local", _settings(mailroot, ["bob", "carol"]))
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test", "carol@postbus.test"])
    bob, carol_result = (await bus.status(job.queue_id)).results
    for result, sub in ((bob, "bob/tmp"), (carol_result, "carol/new")):
        assert (result.status, result.dsn) == ("bounced", "5.2.0")
        assert re.fullmatch(
            rf"maildir delivery failed: create maildir file {re.escape(str(spool))}/{sub}/"
            r"\d+\.\S+: Too many levels of symbolic links", result.reason
        ), result.reason
    assert os.listdir(elsewhere) == [] and os.listdir(carol / "tmp") == []


async def test_virtual_intermediate_links_are_not_followed(
    bus: Bus, run_agent: RunAgent, mailroot: Path
) -> None:
    base = _spool(mailroot, "vmail")
    give(base, VIRTUAL_ID, VIRTUAL_ID)
    outside = mailroot / "outside"
    outside.mkdir()
    give(outside, VIRTUAL_ID, VIRTUAL_ID)
    (base / "virt.test").symlink_to(outside, target_is_directory=True)
    (base / "catch").symlink_to(outside, target_is_directory=True)
    (mailroot / "vmailbox").write_text("alice@virt.test virt.test/alice/\n@catch.test catch/all\n")
    await run_agent(main, "virtual", _settings(
        mailroot, virtual_mailbox_base=str(base),
        virtual_mailbox_maps=f"texthash:{mailroot}/vmailbox",
        virtual_uid_maps=f"static:{VIRTUAL_ID}", virtual_gid_maps=f"static:{VIRTUAL_ID}",
    ))
    job = await bus.submit("virtual", "virt.test", ["alice@virt.test", "any@catch.test"])
    alice, catch = (await bus.status(job.queue_id)).results
    assert (alice.status, alice.dsn) == ("deferred", "4.2.0")
    assert re.fullmatch(
        rf"maildir delivery failed: create maildir file {re.escape(str(base))}/virt\.test/alice/"
        r"tmp/\d+\.\S+: Too many levels of symbolic links", alice.reason
    ), alice.reason
    assert (catch.status, catch.dsn, catch.reason) == (
        "deferred", "4.2.0", f"delivery failed to mailbox {base}/catch/all: "
                             "cannot open file: Too many levels of symbolic links"
    )
    assert os.listdir(outside) == []
