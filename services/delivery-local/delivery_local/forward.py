"""Finding and reading a user's ``.forward`` file (≈ local/dotforward.c).

``forward_path`` lists candidate names; each is expanded with the
recipient's ``$user``, ``$home``, ``$extension``, ``$recipient_delimiter``...
(values censored by ``forward_expansion_filter``) and an entry that uses a
name without a value is skipped (``$home/.forward${recipient_delimiter}${extension}``
when there is no extension). The first one that exists is the file.

Everything here runs with the recipient's file-system rights (a thread's
fsuid as root): the user's own permissions decide what can be seen and read.
The file must be a regular file (not followed through a symlink), owned by
the user or root, and not world-writable; otherwise Postfix logs a warning
and delivers to the mailbox instead, and so does this.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass

from delivery_local import alias
from delivery_local.local_expand import ExpandError, local_expand
from delivery_local.privs import Rights, run_as

log = logging.getLogger("postbus.delivery")


@dataclass
class Forward:
    path: str
    targets: list[alias.Target] | None  # None: found but unusable (warned), use the mailbox
    extension_used: bool = False  # the file's name has the address extension


def _find(candidates: list[str]) -> tuple[str, os.stat_result] | None:
    for path in candidates:
        try:
            return path, os.lstat(path)
        except OSError:
            continue
    return None


def _read(path: str, uid: int) -> list[alias.Target] | None:
    """The file's entries, or None after a warning (as the user: fsuid switched)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a symlink
            log.warning("file %s is not a regular file", path)
        else:
            log.warning("cannot open file %s: %s", path, exc.strerror)
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            log.warning("file %s is not a regular file", path)
            return None
        if st.st_uid not in (0, uid):
            log.warning("file %s has bad owner uid %d", path, st.st_uid)
            return None
        if st.st_mode & stat.S_IWOTH:
            log.warning("file %s is world writable", path)
            return None
        text = fh.read(1 << 20).decode("utf-8", "surrogateescape")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return alias.parse("\n".join(lines))


async def find_forward(
    forward_path: str, attrs: dict[str, str | None], allowed: str, rights: Rights, uid: int
) -> Forward | None:
    """The user's .forward (None: no file, deliver to the mailbox)."""
    candidates: list[str] = []
    with_extension: set[str] = set()
    for entry in forward_path.replace(",", " ").split():
        try:
            expansion = local_expand(entry, attrs, allowed)
        except ExpandError as exc:
            log.warning("bad forward_path entry %s: %s", entry, exc)
            continue
        if not expansion.undefined and expansion.text.startswith("/"):
            candidates.append(expansion.text)
            if expansion.extension_used:
                with_extension.add(expansion.text)
    if not candidates:
        return None
    found = await run_as(rights, _find, candidates)
    if found is None:
        return None
    path, st = found
    if not stat.S_ISREG(st.st_mode):
        log.warning("file %s is not a regular file", path)
        return Forward(path, None)
    return Forward(path, await run_as(rights, _read, path, uid), path in with_extension)
