"""Directories and mailbox files opened without following links (≈ safe_open.c, make_dirs.c).

Every path a delivery writes is a trusted base directory (mail_spool_directory,
the user's home, virtual_mailbox_base, the directory of an alias ``/file``)
plus components below it that came from resolved names. The base is opened
as configured (``/var/mail`` may be a link the administrator made); each
component below it is opened relative to its parent's descriptor with
O_NOFOLLOW, and files are created and linked relative to those descriptors,
so a symbolic link or a swapped directory below the base can never send a
write elsewhere.

Errors are OSError with Postfix's texts: ``cannot open file: ...``,
``file is a symbolic link``, ``file has 2 hard links``...
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_base(base: str) -> int:
    """The base directory itself (configured by the administrator: links are followed)."""
    return os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(parent: int, name: str, *, create: bool = False, mode: int = 0o700) -> int:
    """``name`` below the directory ``parent``, never through a link; made when missing."""
    try:
        return _open_dir(parent, name)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=parent)
    return _open_dir(parent, name)


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except NotADirectoryError:  # O_DIRECTORY|O_NOFOLLOW on a link: say that it is one
        if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        raise


def walk(base: str, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of ``base/parts...``, each part opened below the last (made when missing)."""
    fd = open_base(base)
    try:
        for part in parts:
            child = open_dir(fd, part, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refused(code: int, why: str) -> OSError:
    return OSError(code, why)


def _open_exist(parent: int, name: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(name, _APPEND, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(errno.EPERM, "file is a symbolic link") from None
        raise _refused(exc.errno or errno.EIO, f"cannot open file: {exc.strerror}") from None
    st = os.fstat(fd)
    if st.st_nlink != 1 or stat.S_ISDIR(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _refused(errno.EISDIR, "file is a directory")
        raise _refused(errno.EPERM, f"file has {st.st_nlink} hard links")
    return fd, st


def open_append(
    parent: int, name: str, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> tuple[int, os.stat_result]:
    """Open ``name`` in ``parent`` to append, creating it exclusively when missing (≈ safe_open()
    with O_CREAT): never a link, never a file with another hard link; a new file gets
    ``owner`` (uid, gid) when given."""
    try:
        return _open_exist(parent, name)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
    try:
        fd = os.open(name, _APPEND | os.O_CREAT | os.O_EXCL, mode, dir_fd=parent)
    except FileExistsError:
        return _open_exist(parent, name)
    except OSError as exc:
        code = exc.errno or errno.EIO
        raise _refused(code, f"cannot create file exclusively: {exc.strerror}") from None
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        return fd, os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        code = exc.errno or errno.EIO
        raise _refused(code, f"cannot change file ownership: {exc.strerror}") from None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
