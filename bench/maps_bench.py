"""Lookup-table microbenchmark: Redis-backed hash: tables (issue 4, point 5).

Starts its own redis-server on loopback and prints one line per figure:

* the time ``postbus postmap`` takes to load a 100,000-entry table (target < 5 s);
* the median latency of a hash: lookup with a cold cache (target <= 0.3 ms);
* cached lookups per second in one process (target >= 100,000).

Run: ``python bench/maps_bench.py`` (``--entries N`` to change the table size).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from postbus.maps import context
from postbus.maps.table import open_table
from postbus.servers import redis_server


def load_table(workdir: Path, redis_url: str, entries: int) -> tuple[str, float]:
    cfg = workdir / "etc"
    cfg.mkdir()
    (cfg / "main.cf").write_text(f"postbus_redis_url = {redis_url}\n")
    source = workdir / "virtual"
    source.write_text("".join(f"user{i}@example{i % 100}.com  target{i}@example.net\n"
                              for i in range(entries)))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(cfg), "postmap",
                    f"hash:{source}"], check=True)
    return f"hash:{source}", time.perf_counter() - start


async def cold_latency(spec: str, redis_url: str, entries: int, samples: int) -> float:
    context.configure(redis_url, cache_size=0)
    table = open_table(spec)
    await table.lookup("warm-up")  # opens the connection
    timings = []
    for _ in range(samples):
        key = f"user{random.randrange(entries)}@example{random.randrange(100)}.com"
        start = time.perf_counter()
        await table.lookup(key)
        timings.append(time.perf_counter() - start)
    await context.aclose()
    return statistics.median(timings)


async def cached_rate(spec: str, redis_url: str, lookups: int) -> float:
    context.configure(redis_url)
    table = open_table(spec)
    keys = [f"user{i}@example{i % 100}.com" for i in range(1000)]
    for key in keys:
        await table.lookup(key)
    start = time.perf_counter()
    for i in range(lookups):
        await table.lookup(keys[i % 1000])
    elapsed = time.perf_counter() - start
    await context.aclose()
    return lookups / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=5_000)
    parser.add_argument("--lookups", type=int, default=500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maps-bench-") as tmp:
        workdir = Path(tmp)
        server = redis_server(workdir / "redis").start()
        try:
            spec, load_s = load_table(workdir, server.url, args.entries)
            print(f"maps postmap load {args.entries} entries: {load_s:.2f} s (target < 5 s)")
            median = asyncio.run(cold_latency(spec, server.url, args.entries, args.samples))
            print(f"maps cold-cache hash lookup median: {median * 1000:.3f} ms"
                  " (target <= 0.3 ms)")
            rate = asyncio.run(cached_rate(spec, server.url, args.lookups))
            print(f"maps cached lookups: {rate:,.0f}/s in one process (target >= 100,000/s)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
