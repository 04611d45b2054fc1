"""When to try deferred mail again (≈ qmgr_defer.c / qmgr_active.c backoff)."""

from __future__ import annotations

from postbus.config.loader import Config


def backoff(cfg: Config, arrival_time: float, now: float) -> float:
    """Postfix's rule: wait as long as the message has been queued, clamped
    to [minimal_backoff_time, maximal_backoff_time]; so retries spread out
    roughly exponentially."""
    low = cfg.time("minimal_backoff_time")
    high = cfg.time("maximal_backoff_time")
    return max(low, min(high, now - arrival_time))
