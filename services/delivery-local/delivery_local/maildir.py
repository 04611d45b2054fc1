"""Maildir delivery exactly as Postfix (≈ local/maildir.c, virtual/maildir.c).

The message goes to ``tmp/<time>.P<pid>Q<n>.<host>`` (created exclusively),
is fsynced, then linked into ``new/<time>.V<dev>I<ino>M<usec>.<host>`` and
the temporary name removed; ``new/`` is fsynced so the entry survives a
crash. A reader never sees a partial message.

Every directory is opened below its parent's descriptor without following
links (:mod:`delivery_local.safefile`), and the file is created, linked and
unlinked relative to those descriptors. Missing directories are made
(0700) as Postfix's make_dirs() does, as whoever the delivery runs as.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import socket
import time
from collections.abc import Sequence

from delivery_local.safefile import open_dir, walk, write_all

_serial = itertools.count()
_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@functools.cache
def _hostname() -> str:
    """The host part of the names, looked up once (as Postfix's get_hostname())."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072")


class MaildirError(OSError):
    """A step failed; ``filename`` names the file Postfix's text names."""


class MaildirWriteError(MaildirError):
    """Writing the message failed (Postfix: ``error writing message: ...``)."""


def deliver_maildir(base: str, parts: Sequence[str], data: bytes, size_limit: int = 0) -> str:
    """Write one message into the Maildir ``base/parts...``; returns the path in new/.

    ``size_limit``: Postfix's file size limit (RLIMIT_FSIZE there), which in a
    Maildir bounds each message file; a larger one fails with EFBIG."""
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    host = _hostname()
    where = os.path.join(base, *parts)
    tmp_name = f"{sec}.P{os.getpid()}Q{next(_serial)}.{host}"
    tmp_path = os.path.join(where, "tmp", tmp_name)
    try:
        box = walk(base, parts, create=True)
    except OSError as exc:
        raise MaildirError(exc.errno, exc.strerror, tmp_path) from None
    try:
        return _deliver(box, where, tmp_name, tmp_path, sec, usec, host, data, size_limit)
    finally:
        os.close(box)


def _deliver(
    box: int, where: str, tmp_name: str, tmp_path: str, sec: int, usec: int, host: str,
    data: bytes, size_limit: int,
) -> str:
    try:
        tmp = _subdir(box, "tmp")
    except OSError as exc:
        raise MaildirError(exc.errno, exc.strerror, tmp_path) from None
    try:
        try:
            fd = os.open(tmp_name, _FILE, 0o600, dir_fd=tmp)
        except OSError as exc:
            raise MaildirError(exc.errno, exc.strerror, tmp_path) from None
        try:
            if size_limit > 0 and len(data) > size_limit:
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
            write_all(fd, data)
            os.fsync(fd)
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=tmp)
            raise MaildirWriteError(exc.errno, exc.strerror, tmp_path) from None
        os.close(fd)
        new_name = f"{sec}.V{st.st_dev:x}I{st.st_ino:x}M{usec}.{host}"
        new_path = os.path.join(where, "new", new_name)
        try:
            new = _subdir(box, "new")
            try:
                os.link(tmp_name, new_name, src_dir_fd=tmp, dst_dir_fd=new,
                        follow_symlinks=False)
                os.fsync(new)
            finally:
                os.close(new)
        except OSError as exc:
            raise MaildirError(exc.errno, exc.strerror, new_path) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=tmp)
        return new_path
    finally:
        os.close(tmp)


def _subdir(box: int, name: str) -> int:
    """tmp/ or new/ of the Maildir; all three are made when one is missing."""
    try:
        return open_dir(box, name)
    except FileNotFoundError:
        for sub in ("tmp", "new", "cur"):
            os.close(open_dir(box, sub, create=True))
        return open_dir(box, name)
