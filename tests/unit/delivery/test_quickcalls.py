"""The GIL-keeping file calls behave as the os calls they replace."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from delivery_local import quickcalls

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def test_create_write_link_unlink(tmp_path: Path) -> None:
    top = quickcalls.open_at(-100, str(tmp_path), _DIR)
    try:
        fd = quickcalls.open_at(top, "tmpname", _NEW, 0o640)
        data = os.urandom(300_000)  # more than one pipe-sized write would take at once
        quickcalls.write_all(fd, data)
        assert os.fstat(fd).st_mode & 0o777 == 0o640 & ~_umask()
        quickcalls.close(fd)
        quickcalls.link_at(top, "tmpname", top, "newname")
        quickcalls.unlink_at(top, "tmpname")
    finally:
        quickcalls.close(top)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newname"]
    assert (tmp_path / "newname").read_bytes() == data


def test_errors_are_the_os_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    top = quickcalls.open_at(-100, str(tmp_path), _DIR)
    try:
        with pytest.raises(FileNotFoundError) as missing:
            quickcalls.open_at(top, "missing", _DIR)
        assert missing.value.filename == "missing"
        with pytest.raises(FileExistsError):
            quickcalls.open_at(top, "file", _NEW, 0o600)
        with pytest.raises(NotADirectoryError):  # a link, not followed, is not a directory
            quickcalls.open_at(top, "link", _DIR)
        with pytest.raises(OSError) as loop:  # a link as the file to create
            quickcalls.open_at(top, "link", os.O_WRONLY | os.O_NOFOLLOW)
        assert loop.value.errno == errno.ELOOP
        with pytest.raises(FileExistsError):
            quickcalls.link_at(top, "file", top, "elsewhere")
        with pytest.raises(FileNotFoundError):
            quickcalls.unlink_at(top, "missing")
    finally:
        quickcalls.close(top)
    with pytest.raises(OSError) as closed:
        quickcalls.close(top)
    assert closed.value.errno == errno.EBADF


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
