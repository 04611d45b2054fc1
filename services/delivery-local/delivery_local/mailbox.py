"""Appending to an mbox file (≈ local/mailbox.c, local/file.c, mbox_open.c).

The file is opened as safe_open() does (see :mod:`delivery_local.safefile`):
never through a link, never with a second hard link. A mailbox must be a
regular file (an alias ``/file`` may also be a device such as /dev/null)
and, with strict_mailbox_ownership, owned by the recipient. It is locked
with fcntl (Postfix's default ``mailbox_delivery_lock`` on Linux also uses
a dotlock; fcntl is what other processes here honour), the entry appended
and fsynced; on any write error the file is cut back to its old size so no
half message is left behind. ``size_limit`` is Postfix's file size limit
(mailbox_size_limit, virtual_mailbox_limit: setrlimit(RLIMIT_FSIZE) there):
an entry that would take the file past it is not written, and fails as
Postfix's write fails, with EFBIG.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Sequence

from delivery_local.safefile import open_append, walk, write_all


class WriteError(OSError):
    """Writing the message failed (Postfix's mail_copy() text: ``error writing message: ...``)."""


class MailboxBusy(Exception):
    """Another process holds the lock; try again later."""


class NotRegular(Exception):
    """The destination is a directory, device, fifo...: not a mailbox."""


class NotOwned(Exception):
    """strict_mailbox_ownership: the mailbox belongs to someone else."""


class Executable(Exception):
    """An alias ``/file`` destination with an execute bit (Postfix will not append to it)."""


def deliver_mbox(
    base: str,
    parts: Sequence[str],
    name: str,
    data: bytes,
    *,
    owner: tuple[int, int] | None = None,
    owner_uid: int = -1,
    any_file: bool = False,
    lock_wait: float = 5.0,
    size_limit: int = 0,
) -> None:
    """Append ``data`` (a complete mbox entry) to ``base/parts.../name`` under an fcntl lock.

    ``owner``: (uid, gid) a newly created file is given; ``owner_uid``: the uid
    the file must have (-1: not checked); ``any_file``: an alias ``/file``, which
    may be a device but not executable.
    """
    try:
        parent = walk(base, parts)
    except OSError as exc:  # as safe_open() words a missing or unusable directory
        why = "cannot create file exclusively" if exc.errno == errno.ENOENT else "cannot open file"
        raise OSError(exc.errno, f"{why}: {exc.strerror}") from None
    try:
        fd, st = open_append(parent, name, owner=owner)
    finally:
        os.close(parent)
    try:
        regular = stat.S_ISREG(st.st_mode)
        if not regular and not any_file:
            raise NotRegular()
        if regular and any_file and st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            raise Executable()
        if owner_uid >= 0 and st.st_uid != owner_uid:
            raise NotOwned()
        if not regular:
            write_all(fd, data)
            return
        _lock(fd, lock_wait)
        if os.fstat(fd).st_nlink != 1:  # replaced while we waited (≈ mbox_open())
            raise OSError(errno.EAGAIN, "target file status changed unexpectedly")
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            if size_limit > 0 and size + len(data) > size_limit:
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
            write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            raise WriteError(exc.errno, f"error writing message: {exc.strerror}") from None
    finally:
        os.close(fd)  # closing drops the lock


def _lock(fd: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() > deadline:
                raise MailboxBusy(
                    "unable to lock for exclusive access: Resource temporarily unavailable"
                ) from exc
            time.sleep(0.05)
