"""Hypothesis strategies shared by the fuzzers: mail-ish text, domains, addresses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

#: Characters that mean something to an SMTP path parser, and some that must never pass.
SPECIALS = [*'<>"\\@()[]:;,. \t', "\x00", "\x7f", "\r", "\n", "\udcff", "é", "\u2028"]
PLAIN = list("abcxyzABZ019-_+=.%!#~'/")

#: Text mostly of characters the parsers care about, and fully arbitrary text.
mailish = st.one_of(
    st.text(st.sampled_from(SPECIALS + PLAIN), max_size=60),
    st.text(max_size=60),
)

#: Long text made of a repeated piece: what makes a parser slow if anything does.
long_mailish = st.builds(
    lambda piece, n: (piece * n)[:4096], mailish.filter(bool), st.integers(50, 2000)
)

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_v4 = st.ip_addresses(v=4).map(lambda a: f"[{a}]")
_v6 = st.ip_addresses(v=6).map(lambda a: f"[IPv6:{a}]")
domains = st.one_of(
    st.lists(_label, min_size=1, max_size=4)
    .filter(lambda labels: not all(c.isdigit() for c in "".join(labels)))
    .map(".".join),
    _v4,
    _v6,
)


def bounded(fn: Callable[..., T], *args: Any, limit: float = 1.0, **kwargs: Any) -> T:
    """``fn(*args)``, failing when one call takes longer than ``limit`` seconds."""
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        took = time.monotonic() - start
        assert took < limit, f"{fn.__name__} took {took:.2f}s on {args!r:.200}"
