"""Lua scripts run on Redis by their SHA1 digest (one round trip per call).

The destination windows and the client limits keep their state in Redis and
change it with small scripts: atomic, one round trip. EVALSHA sends only the
digest; a Redis that does not know the script (first use, restarted,
SCRIPT FLUSH) answers NOSCRIPT and the script is loaded once.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

_digests: dict[str, str] = {}  # script -> SHA1, as Redis knows it


async def run_script(client: Redis, script: str, keys: list[str],
                     args: list[str | int | float]) -> Any:
    """The script's answer for these keys and arguments."""
    digest = _digests.get(script)
    if digest is not None:
        try:
            return await client.evalsha(digest, len(keys), *keys, *args)
        except NoScriptError:
            pass
    _digests[script] = await client.script_load(script)
    return await client.evalsha(_digests[script], len(keys), *keys, *args)
