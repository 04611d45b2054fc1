"""The cyclic garbage collector, settled for a long-running role.

A role's steady work (a session, a job) is freed by reference counting, so
the collector finds next to nothing; yet at CPython's default threshold (700)
a young collection ran every few messages, walking the objects of the work in
flight, and a full one every few thousand walked everything startup made
(modules, configuration, tables: some 55,000 objects in ingress-smtpd). That
was about 2 % of ingress-smtpd's CPU per message.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG_OBJECTS = 10_000  # the collector's first threshold (CPython's default: 700)


@contextlib.contextmanager
def settled() -> Iterator[None]:
    """Freeze what exists now out of the collector's way and let its youngest
    generation grow to YOUNG_OBJECTS; as it was again on the way out (a test
    may run a role inside its own process)."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, threshold[1], threshold[2])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
