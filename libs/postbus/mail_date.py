"""Dates as Postfix writes them in headers and reports (≈ global/mail_date.c)."""

from __future__ import annotations

import time

__all__ = ["mail_date"]


_last: tuple[int, str] = (-1, "")  # the second last formatted, and its text


def mail_date(when: float) -> str:
    """``Wed,  5 Nov 2025 13:28:55 +0000 (UTC)``: local time, a space-padded day
    (%e), the numeric zone and its name, as Received:, Date: and Arrival-Date:
    read in Postfix's mail. Formatted once per second (every message of that
    second has the same)."""
    global _last
    second = int(when)
    if _last[0] != second:
        _last = (second, _format(second))
    return _last[1]


def _format(when: float) -> str:
    tm = time.localtime(when)
    offset = tm.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    zone = f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    return time.strftime("%a, %e %b %Y %H:%M:%S ", tm) + f"{zone} ({tm.tm_zone})"
