"""Mail directories for the local delivery tests, reachable by the users deliveries run as.

The suite runs as root in CI, and then the agent writes with the
recipient's rights: a table user's as mail_owner, an alias file's as
default_privs. pytest's tmp_path lies under a 0700 root directory those
users cannot traverse, so these tests keep their mail under a fresh 0755
directory of their own, removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0
#: mail_owner in these tests: an unprivileged account every Debian system has, not default_privs.
MAIL_OWNER = "daemon"
#: A passwd user with no table entry (Debian's bin, uid 2).
PASSWD_USER = "bin"
#: virtual_uid_maps / virtual_gid_maps in these tests (no passwd entry needed).
VIRTUAL_ID = 5000


def uid_gid(name: str) -> tuple[int, int]:
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def owner_of(name: str) -> tuple[int, int]:
    """Who a file written for ``name``'s rights belongs to: that account as root, else us."""
    return uid_gid(name) if ROOT else (os.geteuid(), os.getegid())


def give(path: Path, uid: int, gid: int) -> None:
    """chown when root (not root, everything is ours already)."""
    if ROOT:
        os.chown(path, uid, gid)


@pytest.fixture
def mailroot() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postbus-local-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``root`` (links not followed): mode, size, and a file's bytes."""
    seen: dict[str, tuple[int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = Path(path).read_bytes() if os.path.isfile(path) and not os.path.islink(path) \
                else b""
            seen[os.path.relpath(path, root)] = (st.st_mode, st.st_size, data)
    return seen


def changed(before: dict[str, tuple[int, int, bytes]],
            after: dict[str, tuple[int, int, bytes]]) -> set[str]:
    """Paths added, removed or modified between two snapshots."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
