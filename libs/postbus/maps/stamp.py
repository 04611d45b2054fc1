"""The build stamp of a copy of an indexed table: which copy is newer.

An indexed table (``hash:/etc/postbus/access``) may have two copies: the
compiled file beside its source (:mod:`postbus.maps.compiled`) and Redis's
(:mod:`postbus.maps.store`).  Each carries the stamp of the build or change
that made it, ``"<nanoseconds since the epoch>-<random>"``: equal stamps
mean the same contents, and of two different ones the later time is the
newer copy, which wins (the newest build or change is the table).
"""

from __future__ import annotations

import secrets
import time

__all__ = ["new_stamp", "newer", "stamp_time"]


def new_stamp() -> str:
    """A stamp for a build or change made now."""
    return f"{time.time_ns()}-{secrets.token_hex(4)}"


def stamp_time(stamp: str | None) -> int:
    """The time part of a stamp; 0 for none or for a table loaded before stamps existed."""
    if not stamp:
        return 0
    head = stamp.partition("-")[0]
    return int(head) if head.isdigit() else 0


def newer(stamp: str | None, than: str | None) -> bool:
    """Whether a copy stamped ``stamp`` is newer than one stamped ``than`` (None: no copy)."""
    if stamp is None:
        return False
    if than is None:
        return True
    return stamp != than and stamp_time(stamp) > stamp_time(than)
