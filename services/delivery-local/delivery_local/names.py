"""Which strings may become part of a mailbox path (the one check, used everywhere).

A raw local part is never a path: it first becomes a name Postbus has
resolved (a passwd user, a local_recipient_maps user, a
virtual_mailbox_maps result), and even then it must pass
:func:`valid_name` before it is joined to a base directory. Postfix needs
no such check because local(8) only delivers to users getpwnam() knows;
Postbus also delivers to table users, so it checks every name.
"""

from __future__ import annotations

#: NAME_MAX of Linux file systems: no longer path component can exist.
MAX_NAME = 255


def valid_name(name: str, *, dot_ok: bool = False) -> bool:
    """Whether ``name`` may be one path component below a base directory.

    Never: empty, ``/``, NUL or another control character, longer than
    :data:`MAX_NAME` bytes, ``.`` or ``..``. A leading dot is refused too
    unless ``dot_ok`` (a configured path such as ``home_mailbox = .maildir/``
    may have one; a mailbox name may not).
    """
    if not name or name in (".", "..") or (name.startswith(".") and not dot_ok):
        return False
    if "/" in name or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME


def relative_parts(path: str) -> tuple[str, ...] | None:
    """The components of a configured relative path, or None when it could leave its base.

    For ``home_mailbox`` and virtual_mailbox_maps results: an absolute path,
    a ``..`` component or a bad character is refused; empty and ``.``
    components are dropped (``a//b/./c`` is ``a/b/c``). A trailing ``/`` (Maildir)
    is the caller's business.
    """
    if not path or path.startswith("/"):
        return None
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if not parts or not all(valid_name(p, dot_ok=True) for p in parts):
        return None
    return parts


def printable(text: str) -> str:
    """``text`` fit for a log line or a DSN: control characters as ``?`` (≈ printable())."""
    return "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text)
