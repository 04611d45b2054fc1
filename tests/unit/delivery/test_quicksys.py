"""delivery_local.quicksys: the libc calls that keep the GIL fail exactly as ``os`` does,
and so do the ``os`` fallbacks used without glibc."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from delivery_local import quicksys

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Calls = tuple[Callable[[int, str, int], int], Callable[[int], None],
              Callable[[int, str, int, str], None], Callable[[int, str], None]]
LIBC: Calls = (quicksys._open_dir, quicksys._close, quicksys._link, quicksys._unlink)
OS: Calls = (quicksys._os_open_dir, os.close, quicksys._os_link, quicksys._os_unlink)


def test_glibc_is_used_here() -> None:
    assert quicksys.libc is not None
    assert quicksys.open_dir is quicksys._open_dir


@pytest.mark.parametrize("calls", [LIBC, OS], ids=["libc", "os"])
def test_calls_and_their_errors(tmp_path: Path, calls: Calls) -> None:
    open_dir, close, link, unlink = calls
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "msg").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    base = open_dir(quicksys.AT_FDCWD, str(tmp_path), _DIR)
    try:
        a, b = open_dir(base, "a", _DIR), open_dir(base, "b", _DIR)
        link(a, "msg", b, "copy")
        assert os.stat(tmp_path / "b" / "copy").st_ino == os.stat(tmp_path / "a" / "msg").st_ino
        with pytest.raises(FileExistsError):
            link(a, "msg", b, "copy")
        unlink(a, "msg")
        assert not (tmp_path / "a" / "msg").exists()
        with pytest.raises(FileNotFoundError) as gone:
            unlink(a, "msg")
        assert gone.value.errno == errno.ENOENT and gone.value.filename == "msg"
        with pytest.raises(FileNotFoundError):
            open_dir(base, "missing", _DIR)
        with pytest.raises(NotADirectoryError):  # O_NOFOLLOW|O_DIRECTORY on a link
            open_dir(base, "link", _DIR)
        close(a)
        close(b)
        with pytest.raises(OSError) as closed:
            close(a)
        assert closed.value.errno == errno.EBADF
    finally:
        os.close(base)
