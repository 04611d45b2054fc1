"""Masquerading against Postfix's cleanup_masq.ref (the cleanup_masquerade_test target of
Postfix 3.7.11's src/cleanup/Makefile.in, every invocation in order)."""

from __future__ import annotations

from pathlib import Path

from postbus.cleanup.masquerade import Masquerade
from postbus.cleanup.status import Stat, Status
from postbus.config.loader import Config

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"

RUNS = [
    ("", "a.b.c,b.c", "xxx@aa.a.b.c"), ("", "A.B.C,B.C", "xxx@aa.a.b.c"),
    ("", "a.b.c,b.c", "xxx@AA.A.B.C"), ("xxx", "a.b.c,b.c", "xxx@aa.a.b.c"),
    ("yyy", "a.b.c,b.c", "xxx@aa.a.b.c"), ("", "!a.b.c,b.c", "xxx@aa.a.b.c"),
    ("", "a.b.c,b.c", "xxx@a.b.c"), ("", "!a.b.c,b.c", "xxx@a.b.c"),
    ("", "a.b.c,b.c", "xxx@aaa.b.c"), ("", "a.b.c,b.c", "xxx@b.c"),
    ("fail:whatever", "xy", "xxx@b.c"),
]
ERRS = {Stat.OK: 0, Stat.WRITE: 2}  # CLEANUP_STAT_WRITE


async def test_cleanup_masq_ref() -> None:
    out = []
    for exceptions, domains, address in RUNS:
        cfg = Config.from_text(f"masquerade_exceptions = {exceptions}\n"
                               f"masquerade_domains = {domains}\n", "")
        status = Status()
        result, _ = await Masquerade(cfg).external(status, address)
        out.append(f"----------\nexceptions: {exceptions}\nmasq_list:  {domains}\n"
                   f"address:    {address}\nresult:     {result}\n"
                   f"errs:       {ERRS[status.stat]}\n")
    assert "".join(out) == (GOLDEN / "cleanup_masq.ref").read_text()
