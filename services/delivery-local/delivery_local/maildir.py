"""Maildir delivery exactly as Postfix (≈ local/maildir.c).

The message goes to ``tmp/<time>.P<pid>Q<n>.<host>`` (created exclusively),
is fsynced, then linked into ``new/<time>.V<dev>I<ino>M<usec>.<host>`` and
the temporary name removed; ``new/`` is fsynced so the entry survives a
crash. A reader never sees a partial message.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

_serial = itertools.count()


def _hostname() -> str:
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_maildir(path: Path, uid: int = -1, gid: int = -1) -> None:
    for sub in (path, path / "tmp", path / "new", path / "cur"):
        if not sub.is_dir():
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)
            if uid >= 0 and os.geteuid() == 0:
                os.chown(sub, uid, gid)


def deliver_maildir(path: Path, data: bytes, uid: int = -1, gid: int = -1) -> Path:
    """Write one message into the Maildir at ``path``; returns the file in new/."""
    make_maildir(path, uid, gid)
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    host = _hostname()
    tmp = path / "tmp" / f"{sec}.P{os.getpid()}Q{next(_serial)}.{host}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if uid >= 0 and os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    new = path / "new" / f"{sec}.V{st.st_dev:x}I{st.st_ino:x}M{usec}.{host}"
    try:
        os.link(tmp, new)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path / "new")
    return new
