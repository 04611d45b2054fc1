"""Short system calls made without releasing the GIL.

Every ``os`` call releases the GIL around its system call. A delivery thread
makes about twenty calls per Maildir delivery while the event loop thread
holds the GIL most of the time, so each release of a call that takes a
microsecond (open a directory, close, link, unlink, setfsuid) is a GIL
handoff: two futex calls and two context switches, which cost more than the
call itself. These wrappers call libc through ``ctypes.PyDLL``, which keeps
the GIL; the calls that can wait (creating the file, write, fsync) still go
through ``os`` and let the other threads run. Errors are the OSError (with
its errno subclass) that ``os`` raises. Without glibc the ``os`` functions
are used.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable


def _load() -> ctypes.PyDLL | None:
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        libc.openat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        libc.close.argtypes = [ctypes.c_int]
        libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                ctypes.c_int]
        libc.unlinkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        libc.setfsuid.argtypes = [ctypes.c_int]
        libc.setfsgid.argtypes = [ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


libc = _load()

#: The current directory as a directory descriptor (Linux): ``open_dir(AT_FDCWD, "/abs")``.
AT_FDCWD = -100


def _failed(name: str | None = None) -> OSError:
    code = ctypes.get_errno()
    if name is None:
        return OSError(code, os.strerror(code))
    return OSError(code, os.strerror(code), name)


def _open_dir(dir_fd: int, name: str, flags: int) -> int:
    assert libc is not None
    fd: int = libc.openat(dir_fd, os.fsencode(name), flags)
    if fd < 0:
        raise _failed(name)
    return fd


def _close(fd: int) -> None:
    assert libc is not None
    if libc.close(fd) < 0:
        raise _failed()


def _link(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """link(2) relative to two directories, never following a link (flags 0)."""
    assert libc is not None
    if libc.linkat(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), 0) < 0:
        raise _failed(src)


def _unlink(dir_fd: int, name: str) -> None:
    assert libc is not None
    if libc.unlinkat(dir_fd, os.fsencode(name), 0) < 0:
        raise _failed(name)


def _os_open_dir(dir_fd: int, name: str, flags: int) -> int:
    return os.open(name, flags, dir_fd=None if dir_fd == AT_FDCWD else dir_fd)


def _os_link(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)


def _os_unlink(dir_fd: int, name: str) -> None:
    os.unlink(name, dir_fd=dir_fd)


open_dir: Callable[[int, str, int], int] = _open_dir if libc else _os_open_dir
close: Callable[[int], None] = _close if libc else os.close
link: Callable[[int, str, int, str], None] = _link if libc else _os_link
unlink: Callable[[int, str], None] = _unlink if libc else _os_unlink
