"""How one message fares in cleanup (≈ CLEANUP_STAT_* and cleanup_strerror.c).

Postfix's cleanup does not stop at the first problem: it notes an error
bit and a reason, goes on reading (so every warning is logged), and at the
end the message is not queued at all. smtpd then answers the most severe
error; mail submitted with sendmail cannot be bounced for these errors
either (CLEANUP_STAT_MASK_CANT_BOUNCE), the submission fails.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

log = logging.getLogger("postbus.cleanup")


class Stat(enum.Flag):
    """The error bits this package raises (≈ CLEANUP_STAT_WRITE, CLEANUP_STAT_DEFER)."""

    OK = 0
    WRITE = enum.auto()  # a table could not answer: "queue file write error"
    DEFER = enum.auto()  # an expansion limit: the reason says which
    CONT = enum.auto()  # content rejected (header/body checks): the reason says why


WRITE_ERROR = "451 4.3.0 Error: queue file write error"


class CleanupError(Exception):
    """The message must not be queued; ``reply`` is smtpd's answer."""

    def __init__(self, stat: Stat, reason: str = "") -> None:
        super().__init__(reason or WRITE_ERROR)
        self.stat = stat
        self.reason = reason

    @property
    def reply(self) -> str:
        """smtpd's reply (≈ common_post_message_handling()), in Postfix's order: a
        deferral (451 and its reason), rejected content (550 and its reason), anything
        else a queue file write error."""
        if Stat.DEFER in self.stat:
            return f"451 {self.reason}" if self.reason else "451 4.7.1 Error: service unavailable"
        if Stat.CONT in self.stat:
            return f"550 {self.reason or '5.7.1 message content rejected'}"
        return WRITE_ERROR


class MessageDiscarded(Exception):
    """A DISCARD action: the client is told the message was queued, and nothing is."""


@dataclass
class Status:
    """The error state of one message in cleanup."""

    queue_id: str = "NOQUEUE"
    stat: Stat = Stat.OK
    reason: str = ""

    def fail(self, stat: Stat, warning: str, reason: str | None = None, *,
             info: bool = False) -> None:
        """Note an error and log its warning as cleanup does (``<queue id>: ...``)."""
        (log.info if info else log.warning)("%s: %s", self.queue_id, warning)
        self.stat |= stat
        if reason is not None:
            self.reason = reason

    @property
    def ok(self) -> bool:
        return self.stat == Stat.OK

    def check(self) -> None:
        """Raise :class:`CleanupError` when anything failed."""
        if self.stat != Stat.OK:
            raise CleanupError(self.stat, self.reason)
