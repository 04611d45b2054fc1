"""delivery-local pieces that need no bus: alias syntax, mailbox bytes, Maildir and mbox files."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path

import pytest

from delivery_local import privs
from delivery_local.alias import Target, parse, split_value
from delivery_local.copy import delivered_to_seen, header_lines, mbox_message, unix_text
from delivery_local.mailbox import deliver_mbox
from delivery_local.maildir import deliver_maildir
from delivery_local.names import printable, relative_parts, valid_name
from delivery_local.privs import PrivilegeError, Rights
from delivery_local.safefile import walk


def test_alias_values() -> None:
    assert split_value('bob, "|/bin/filter -a, -b", /tmp/x\n carol') == [
        "bob", "|/bin/filter -a, -b", "/tmp/x", "carol",
    ]
    assert parse("root, |cat, /var/a/, :include:/etc/l, u@remote.test") == [
        Target("local", "root"),
        Target("command", "cat"),
        Target("file", "/var/a/"),
        Target("include", "/etc/l"),
        Target("address", "u@remote.test"),
    ]


def test_headers_and_mbox_quoting() -> None:
    headers = header_lines("a@x.test", "Orig@x.test", "Bob@X.test")
    assert headers == (
        b"Return-Path: <a@x.test>\nX-Original-To: Orig@x.test\nDelivered-To: bob@x.test\n"
    )
    entry = mbox_message(b"Subject: s\n\nFrom here\n>From there\n", "", headers)
    assert re.match(rb"From MAILER-DAEMON  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", entry)
    assert entry.endswith(b"\n>From here\n>From there\n\n")
    assert unix_text(b"a\r\nb") == b"a\nb\n"
    assert delivered_to_seen(b"Delivered-To: BOB@x.test\nSubject: s\n\nbody", "bob@x.test")
    assert not delivered_to_seen(b"Subject: s\n\nDelivered-To: bob@x.test\n", "bob@x.test")


def test_maildir_write_is_atomic_and_named_as_postfix(tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    path = Path(deliver_maildir(str(tmp_path), ("Maildir",), b"Subject: hi\n\nbody\n"))
    assert path.parent == box / "new"
    assert re.fullmatch(r"\d+\.V[0-9a-f]+I[0-9a-f]+M\d+\..+", path.name)
    assert path.read_bytes() == b"Subject: hi\n\nbody\n"
    assert (box.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)
    assert os.listdir(box / "tmp") == [] and (box / "cur").is_dir()


def test_mbox_appends(tmp_path: Path) -> None:
    box = tmp_path / "bob"
    deliver_mbox(str(tmp_path), (), "bob", b"From a  x\n\nOne\n\n")
    deliver_mbox(str(tmp_path), (), "bob", b"From b  y\n\nTwo\n\n")
    assert box.read_bytes() == b"From a  x\n\nOne\n\nFrom b  y\n\nTwo\n\n"
    assert box.stat().st_mode & 0o777 == 0o600


def test_mailbox_names_and_relative_paths() -> None:
    for bad in ["", ".", "..", ".hidden", "a/b", "/abs", "a\x00b", "a\x01b", "a\x7f", "a" * 256,
                "é" * 128]:
        assert not valid_name(bad), bad
    for good in ["bob", "a.b", "a..b", "a\\..\\b", '"x"', "a" * 255, "é" * 127]:
        assert valid_name(good), good
    assert valid_name(".maildir", dot_ok=True) and not valid_name("..", dot_ok=True)
    assert relative_parts("Maildir/") == ("Maildir",)
    assert relative_parts("a//b/./.c/") == ("a", "b", ".c")
    for bad in ["", "/abs/", "../x", "a/../b", "a/..", "a\x00/b", "./", "a/\x1b/"]:
        assert relative_parts(bad) is None, bad
    assert printable("a\x00b\nc") == "a?b?c"


def test_a_switch_that_does_not_take_effect_refuses_the_delivery(monkeypatch) -> None:
    class Stuck:
        """A setfsuid()/setfsgid() that leaves the thread as it was (root)."""

        def setfsuid(self, uid: int) -> int:
            return 0

        def setfsgid(self, gid: int) -> int:
            return 0

    monkeypatch.setattr(privs, "_libc", Stuck())
    monkeypatch.setattr(privs, "_groups_cleared", True)
    monkeypatch.setattr(privs, "is_root", lambda: True)
    ran = []
    with pytest.raises(PrivilegeError, match=r"^cannot switch to UID/GID=2/2$"):
        privs._call(Rights(2, 2), ran.append, ("wrote",))
    assert ran == []


async def test_delivery_threads_return_results_and_errors_and_outlive_a_cancel() -> None:
    """run_as hands the work to a delivery thread and back: the value, or the exception it
    raised; a caller cancelled meanwhile (the service stops) does not stop the threads."""
    assert await privs.run_as(privs.AGENT, threading.current_thread) is not threading.main_thread()
    with pytest.raises(FileNotFoundError):
        await privs.run_as(privs.AGENT, os.stat, "/nonexistent/x")
    release = threading.Event()
    waiting = asyncio.ensure_future(privs.run_as(privs.AGENT, release.wait, 30))
    await asyncio.sleep(0)  # the work is queued
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    assert await privs.run_as(privs.AGENT, sum, (1, 2)) == 3


def test_file_helpers_refuse_links_and_hard_links(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        walk(str(tmp_path), ["link", "x"], create=True)
    assert os.listdir(tmp_path / "real") == []
    (tmp_path / "target").write_bytes(b"keep")
    os.link(tmp_path / "target", tmp_path / "hard")
    with pytest.raises(OSError, match=r"\] file has 2 hard links$"):
        deliver_mbox(str(tmp_path), (), "hard", b"From x\n\n")
    assert (tmp_path / "target").read_bytes() == b"keep"
