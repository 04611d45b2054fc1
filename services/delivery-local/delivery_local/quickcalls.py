"""File-system calls that keep the GIL while they run (ctypes.PyDLL).

Each of Python's ``os.open()``, ``os.write()``, ``os.link()``... lets the
GIL go around its system call and takes it back after. In a delivery
thread, with fifteen other delivery threads and the event loop waiting for
the GIL, every such hand-over is a futex wake and a wait: strace counted
about a hundred futex calls per Maildir delivery, for some twenty file
calls that take microseconds each. The calls here keep the GIL (nothing
else runs for those microseconds, and nobody is woken); only the calls that
wait on the disk (``os.fsync()``) still let it go.

They raise OSError as ``os`` does (FileNotFoundError, FileExistsError...
by errno), with the name given, so callers handle them the same way.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.PyDLL(None, use_errno=True)

_openat = _libc.openat
_openat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint]
_openat.restype = ctypes.c_int
_write = _libc.write
_write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_write.restype = ctypes.c_ssize_t
_close = _libc.close
_close.argtypes = [ctypes.c_int]
_close.restype = ctypes.c_int
_linkat = _libc.linkat
_linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_linkat.restype = ctypes.c_int
_unlinkat = _libc.unlinkat
_unlinkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_unlinkat.restype = ctypes.c_int

_EINTR = 4


def _failed(name: str | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), name) if name is not None else OSError(
        code, os.strerror(code))


def open_at(dir_fd: int, name: str, flags: int, mode: int = 0o777) -> int:
    """``os.open(name, flags, mode, dir_fd=dir_fd)``."""
    path = os.fsencode(name)
    while True:
        fd: int = _openat(dir_fd, path, flags, mode)
        if fd >= 0:
            return fd
        if ctypes.get_errno() != _EINTR:
            raise _failed(name)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (a short write continues where it stopped)."""
    done, size = 0, len(data)
    while done < size:
        chunk = data[done:] if done else data
        written: int = _write(fd, chunk, size - done)
        if written < 0:
            if ctypes.get_errno() == _EINTR:
                continue
            raise _failed()
        done += written


def close(fd: int) -> None:
    """``os.close(fd)`` (a descriptor is gone after close, whatever it returns)."""
    if _close(fd) < 0 and ctypes.get_errno() != _EINTR:
        raise _failed()


def link_at(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """``os.link(src, dst, src_dir_fd=..., dst_dir_fd=..., follow_symlinks=False)``."""
    if _linkat(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), 0) < 0:
        raise _failed(dst)


def unlink_at(dir_fd: int, name: str) -> None:
    """``os.unlink(name, dir_fd=dir_fd)``."""
    if _unlinkat(dir_fd, os.fsencode(name), 0) < 0:
        raise _failed(name)
