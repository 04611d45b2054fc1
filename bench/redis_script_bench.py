"""CPU per Lua script call (the destination windows' take/free): redis-py's client
against postbus.redis_script's pipelined connection, 20 callers at a time, on
a private redis-server. Run: .venv/bin/python bench/redis_script_bench.py"""

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis

from postbus.redis_script import _run_with_client, forget, run_script
from postbus.servers import redis_server

S = "redis.call('ZADD', KEYS[1], 1, ARGV[1]); return {'go', '', '', '0', '0'}"


async def calls(fn: Callable[..., Awaitable[Any]], client: Redis, n: int) -> float:
    """CPU seconds per call of ``fn``, n calls by 20 callers."""

    async def worker(i: int) -> None:
        for _ in range(n // 20):
            await fn(client, S, ["k"], [f"m{i}", 1.5])

    t = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(20)))
    return (time.process_time() - t) / n


async def main(url: str) -> None:
    client = Redis.from_url(url)
    for name, fn in (("redis-py", _run_with_client), ("pipelined", run_script)) * 2:
        await fn(client, S, ["k"], ["m", 1.5])
        print(f"{name}: {await calls(fn, client, 20000) * 1e6:.1f} us CPU per script call")
    forget(client)
    await client.aclose()


with tempfile.TemporaryDirectory() as d:
    srv = redis_server(Path(d)).start()
    try:
        uvloop.install()
        asyncio.run(main(srv.url))
    finally:
        srv.stop()
