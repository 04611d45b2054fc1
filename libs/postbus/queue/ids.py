"""Queue IDs in Postfix's two forms (≈ mail_queue.c, MQID_*).

The short form is the microseconds of the arrival time in 5 hex digits
followed by a hex "inode" part; Postfix takes the queue file's inode, we
take random bits, because the ID must be unique across every ingress
replica. Uniqueness is enforced where it matters: the content is published
with ``Nats-Expected-Last-Subject-Sequence: 0``, so a colliding ID is
refused by JetStream and the caller draws another.

The long form (``enable_long_queue_ids = yes``) is seconds and microseconds
in base 52, the letter ``z``, then the "inode" part in base 51, e.g.
``4Nzq8T0nBxz7Lj3``.
"""

from __future__ import annotations

import os
import random
import time

# The random part needs to be unlikely to repeat, not unpredictable: a seeded
# generator, not a system call per ID (secrets); seeded again in a forked child.
_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(16)))

_BASE52 = "0123456789BCDFGHJKLMNPQRSTVWXYbcdfghjklmnpqrstvwxy"
_B52 = _BASE52 + "AE"  # Postfix's 52 characters; "z" is never used in them
_B51 = _B52[:51]


def _encode(value: int, alphabet: str, width: int = 0) -> str:
    base = len(alphabet)
    out = ""
    while value or not out:
        value, rem = divmod(value, base)
        out = alphabet[rem] + out
    return out.rjust(width, alphabet[0])


def short_queue_id(now: float | None = None) -> str:
    """``4F2A1C7D3E``: 5 hex digits of microseconds + 5-6 hex random digits."""
    t = time.time() if now is None else now
    usec = int((t % 1) * 1_000_000)
    return f"{usec:05X}{_random.getrandbits(24):06X}"


def long_queue_id(now: float | None = None) -> str:
    t = time.time() if now is None else now
    sec, usec = int(t), int((t % 1) * 1_000_000)
    return _encode(sec, _B52, 6) + _encode(usec, _B52, 4) + "z" + _encode(
        _random.getrandbits(32), _B51
    )


def new_queue_id(long: bool = False) -> str:
    return long_queue_id() if long else short_queue_id()


def is_queue_id(text: str) -> bool:
    """True for strings that can be queue IDs (safe as NATS subject tokens)."""
    return 6 <= len(text) <= 24 and text.isalnum() and text.isascii()
