"""Redis's copy of an indexed table follows its compiled file (≈ a daemon noticing a new .db).

Postfix daemons notice that ``postmap`` rebuilt a .db file and reopen it.
Ours serve indexed tables from Redis, so the process that looks a table up
also keeps Redis's copy in step with the compiled file beside the source
(:mod:`postbus.maps.compiled`), when that file is on its disk:

* at its first lookup of the table, and whenever the file changed (looked
  at, with one ``stat``, at most every :data:`CHECK_INTERVAL` seconds), or
  when Redis has no copy at all (a fresh or flushed Redis), the process
  compares the file's stamp with Redis's and loads the file when it is
  newer (:func:`postbus.maps.store.replace_if_newer`), then publishes the
  change event so that every replica drops its cached answers;
* a newer copy in Redis (pushed through maps-api, changed with ``postmap
  -i`` where the file is not) is left alone: the newest build wins;
* one process loads while the others wait for it (a Redis lock that
  expires on its own if the loader dies).

So ``postmap access; postbus start`` works (the first lookup loads the
table), and so does ``postbus start; postmap access``: postmap loads Redis
itself and publishes the event when Redis is up, and when it is not, the
roles load the new file as soon as Redis is back.  In containers the
compiled file is usually not on the role's disk; a table arrives there
through maps-api (``postbus postmap --push``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from postbus.maps import context, store
from postbus.maps.compiled import CompiledTable, Ident, NotCompiledTable, file_ident
from postbus.maps.stamp import newer
from postbus.maps.table import TableRetry

__all__ = ["CHECK_INTERVAL", "load_compiled", "refresh"]

log = logging.getLogger("postbus.maps")

#: Seconds between two looks at a compiled file by one process.
CHECK_INTERVAL = 1.0
LOCK_PREFIX = "postbus:maplock:"
LOCK_TTL_MS = 120_000
#: Seconds a process waits for another one's load before the lookup fails (4xx).
LOCK_WAIT = 30.0


@dataclass
class _FileState:
    next_check: float = float("-inf")
    ident: Ident | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0"""


async def load_compiled(r: Redis, table_id: str, db: CompiledTable) -> bool:
    """Load ``db`` into Redis unless Redis holds that build or a newer one; True when loaded.

    Raises TableRetry when Redis fails, or when another process's load
    does not finish within :data:`LOCK_WAIT` seconds.
    """
    lock, token = (LOCK_PREFIX + table_id).encode("utf-8", "surrogateescape"), secrets.token_hex(8)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        if not newer(db.stamp, await store.table_stamp(r, table_id)):
            return False
        if await store.call(lambda: r.set(lock, token, nx=True, px=LOCK_TTL_MS), table_id):
            break
        if time.monotonic() > deadline:
            raise TableRetry(f"{table_id}: another process is still loading {db.path}")
        await asyncio.sleep(0.05)
    try:
        version = await store.replace_if_newer(r, table_id, db.items(), db.stamp)
    finally:
        await store.call(lambda: r.eval(_RELEASE, 1, lock, token), table_id)
    if version is None:
        return False
    log.info("table %s: loaded %s into Redis (version %d)", table_id, db.path, version)
    return True


async def refresh(table_id: str, path: str, type_name: str, *, force: bool = False) -> bool:
    """Bring Redis's copy of ``table_id`` up to its compiled file ``path``, if needed.

    Throttled to one ``stat`` per :data:`CHECK_INTERVAL` per process unless
    ``force`` (Redis had no copy).  Returns True when this call loaded the
    file.  A file that changed drops the table's cached answers.  Raises
    TableRetry when Redis fails: the file is then tried again next time.
    """
    ctx = context.get_context()
    state: _FileState | None = ctx.files.get(table_id)
    if state is None:
        state = ctx.files[table_id] = _FileState()
    now = time.monotonic()
    if not force and now < state.next_check:
        return False
    state.next_check = now + CHECK_INTERVAL
    async with state.lock:
        ident = file_ident(path)
        if ident is None or (ident == state.ident and not force):
            state.ident = ident
            return False
        try:
            db = CompiledTable(path, type_name)
        except (OSError, NotCompiledTable) as exc:
            if ident != state.ident:
                log.warning("%s: ignoring %s: %s", table_id, path, exc)
            state.ident = ident
            return False
        try:
            loaded = await load_compiled(context.redis_client(), table_id, db)
        finally:
            db.close()
        if ident != state.ident:
            ctx.cache.invalidate(table_id)
        state.ident = ident
    if loaded:
        try:
            await context.publish_change(table_id)
        except Exception as exc:  # the other replicas' caches then expire on their TTL
            log.warning("table %s: cannot publish the change event: %s", table_id, exc)
    return loaded
