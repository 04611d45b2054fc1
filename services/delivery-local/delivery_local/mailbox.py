"""Appending to an mbox file (≈ local/mailbox.c, local/file.c, dot_lockfile.c).

The file is locked with fcntl (Postfix's default ``mailbox_delivery_lock``
on Linux also uses a dotlock; fcntl is what other processes here honour),
the entry appended and fsynced; on any write error the file is cut back
to its old size so no half message is left behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path


class MailboxBusy(Exception):
    """Another process holds the lock; try again later."""


def deliver_mbox(
    path: Path, data: bytes, uid: int = -1, gid: int = -1, *, lock_wait: float = 5.0
) -> None:
    """Append ``data`` (a complete mbox entry) to ``path`` under an fcntl lock."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if uid >= 0 and os.geteuid() == 0 and os.fstat(fd).st_uid != uid:
            os.fchown(fd, uid, gid)
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise MailboxBusy(
                        "unable to lock for exclusive access: Resource temporarily unavailable"
                    ) from exc
                time.sleep(0.05)
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)  # closing drops the lock
