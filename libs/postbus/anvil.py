"""Client connection counts and event rates shared by every smtpd replica (≈ Postfix's anvil(8)
server and anvil_clnt.c).

Postfix keeps these counters in one anvil process per host; we keep them in
Redis, so that any number of ingress processes and pods share them. Per
(service, client address), as anvil does:

- a connection count: a sorted set of the connections open now, one member
  per session, scored by when its lease runs out. A process refreshes the
  leases of its sessions every ``lease / 3`` seconds, so the connections of
  a process that died stop counting after one lease;
- event rates: a hash with the start of the current period and the counts
  of connections, messages, recipients, new TLS sessions and AUTH commands
  in it. As anvil does ("simply reset the counter every
  anvil_rate_time_unit"), a period ends ``anvil_rate_time_unit`` after its
  first event and the next event starts a new one with every count at zero.

Each change is one Lua script (atomic, one round trip) on Redis's clock.
Disconnects are sent in batches, :data:`DROP_DELAY` after the first of a
batch, so that a busy listener spends one round trip on many of them;
:meth:`Anvil.disconnect` returns once its batch is sent, and smtpd closes
the socket only then, so that a client that reconnects at once is not
counted twice (as with Postfix, whose anvil call comes before the close).
When Redis cannot answer, a call returns None and smtpd goes on without the
limit, as Postfix's smtpd does when anvil is unreachable; the failure is
logged once, and Redis is not asked again for :data:`RETRY_AFTER` seconds,
so that a dead Redis costs sessions no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from postbus.maps import context
from postbus.redis_script import RedisOutage, run_script

__all__ = ["PREFIX", "Anvil"]

log = logging.getLogger("postbus.smtpd")

PREFIX = "postbus:anvil:"
LEASE = 60.0  # seconds a connection counts without its process refreshing it
TIMEOUT = 1.0  # seconds one call may take before the limit is skipped
RETRY_AFTER = 5.0  # seconds without asking Redis after it failed
DROP_DELAY = 0.005  # seconds a disconnect waits for others to go in the same round trip
_BATCH = 500

_CLOCK = "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + " \
         "math.floor(tonumber(t[2]) / 1000)\n"

# KEYS[1] rate hash; ARGV: unit (ms), field. The period's count of that event.
_INCR = _CLOCK + """
local start = tonumber(redis.call('HGET', KEYS[1], 'start') or '0')
if start == 0 or start + tonumber(ARGV[1]) < now then
  redis.call('DEL', KEYS[1]); start = now
  redis.call('HSET', KEYS[1], 'start', now)
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('PEXPIREAT', KEYS[1], start + tonumber(ARGV[1]) + 1000)
return n
"""

# KEYS[1] rate hash, KEYS[2] open connections; ARGV: unit (ms), member, lease (ms).
_CONNECT = _CLOCK + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
local start = tonumber(redis.call('HGET', KEYS[1], 'start') or '0')
if start == 0 or start + tonumber(ARGV[1]) < now then
  redis.call('DEL', KEYS[1]); start = now
  redis.call('HSET', KEYS[1], 'start', now)
end
local rate = redis.call('HINCRBY', KEYS[1], 'rate', 1)
redis.call('PEXPIREAT', KEYS[1], start + tonumber(ARGV[1]) + 1000)
return {redis.call('ZCARD', KEYS[2]), rate}
"""

# KEYS[1] rate hash; ARGV: unit (ms), field. The period's count, without an event.
_STAT = _CLOCK + """
local start = tonumber(redis.call('HGET', KEYS[1], 'start') or '0')
if start == 0 or start + tonumber(ARGV[1]) < now then return 0 end
return tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
"""

# KEYS: open-connection sets; ARGV: lease (ms), then one member per key.
_REFRESH = _CLOCK + """
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('PEXPIRE', key, tonumber(ARGV[1]))
end
return #KEYS
"""

# KEYS: open-connection sets; ARGV: one member per key. Closed connections.
_DROP = """
for i, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[i]) end
return #KEYS
"""



class Anvil:
    """The counters of one service (the master.cf name smtpd logs: ``for service NAME``)."""

    def __init__(self, service: str, time_unit: float, *,
                 redis: Callable[[], Redis] = context.redis_client,
                 lease: float = LEASE, timeout: float = TIMEOUT) -> None:
        self.service = service
        self.unit_ms = max(int(time_unit * 1000), 1)
        self.redis = redis
        self.lease = lease
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._token = os.urandom(6).hex()
        self._open: dict[str, str] = {}  # member -> its connection set
        self.outage = RedisOutage(log, "problem talking to server anvil (Redis): %s; "
                                  "client limits are not enforced", retry_after=RETRY_AFTER)
        self._refresher: asyncio.Task[None] | None = None
        self._gone: list[tuple[str, str]] = []  # (connection set, member) to drop
        self._sent: asyncio.Future[None] | None = None  # done when _gone has been sent
        self._dropper: asyncio.Task[None] | None = None

    def _key(self, addr: str) -> str:
        return f"{PREFIX}{self.service}:{addr}"

    async def _run(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        return await self.outage.call(run_script(self.redis(), script, keys, list(args)),
                                      self.timeout)

    # -- connections -------------------------------------------------------------------

    async def connect(self, addr: str) -> tuple[str, int, int] | None:
        """A new connection: (its ticket for :meth:`disconnect`, open connections, this
        period's connections), or None when Redis cannot say."""
        key = self._key(addr)
        member = f"{self._token}:{next(self._ids)}"
        got = await self._run(_CONNECT, [key, key + ":conns"],
                              [self.unit_ms, member, int(self.lease * 1000)])
        if got is None:
            return None
        self._open[member] = key + ":conns"
        self._start_refresher()
        return member, int(got[0]), int(got[1])

    async def disconnect(self, ticket: str) -> None:
        """The connection of this ticket is closing; returns when Redis knows it
        (or could not be told)."""
        key = self._open.pop(ticket, None)
        if key is None:
            return
        self._gone.append((key, ticket))
        if self._sent is None:
            loop = asyncio.get_running_loop()
            self._sent = loop.create_future()
            self._dropper = loop.create_task(self._drop(self._sent))
        await asyncio.shield(self._sent)

    async def _drop(self, sent: asyncio.Future[None]) -> None:
        try:
            await asyncio.sleep(DROP_DELAY)
            gone, self._gone, self._sent = self._gone, [], None
            for i in range(0, len(gone), _BATCH):
                batch = gone[i:i + _BATCH]
                await self._run(_DROP, [key for key, _ in batch], [m for _, m in batch])
        finally:
            if not sent.done():
                sent.set_result(None)

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        """Keep the leases of this process's open connections (until there are none)."""
        while self._open:
            await asyncio.sleep(self.lease / 3)
            members = list(self._open.items())
            for i in range(0, len(members), _BATCH):
                part = members[i:i + _BATCH]
                await self._run(_REFRESH, [key for _, key in part],
                                [int(self.lease * 1000), *(m for m, _ in part)])

    async def close(self) -> None:
        """Stop refreshing leases; send the disconnects still waiting."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._dropper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._dropper

    # -- events ------------------------------------------------------------------------

    async def _event(self, addr: str, field: str) -> int | None:
        got = await self._run(_INCR, [self._key(addr)], [self.unit_ms, field])
        return None if got is None else int(got)

    async def mail(self, addr: str) -> int | None:
        return await self._event(addr, "mail")

    async def rcpt(self, addr: str) -> int | None:
        return await self._event(addr, "rcpt")

    async def newtls(self, addr: str) -> int | None:
        return await self._event(addr, "ntls")

    async def auth(self, addr: str) -> int | None:
        return await self._event(addr, "auth")

    async def newtls_stat(self, addr: str) -> int | None:
        """This period's new TLS sessions, without counting one (before a handshake)."""
        got = await self._run(_STAT, [self._key(addr)], [self.unit_ms, "ntls"])
        return None if got is None else int(got)
