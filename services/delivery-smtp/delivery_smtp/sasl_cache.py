"""Recent SASL login failures, so that a wrong password is not tried again and again
(≈ smtp_sasl_auth_cache.c).

With ``smtp_sasl_auth_cache_name`` set, a 535 reply to AUTH is kept for
``smtp_sasl_auth_cache_time`` under the server's host name and the user
name, with a hash of the password: until the entry expires, or the
password in smtp_sasl_password_maps changes, mail for that server is
deferred (bounced without smtp_sasl_auth_soft_bounce) with ``SASL
[CACHED] authentication failed; server HOST said: ...`` and no login is
tried. Postfix keeps the table behind the proxywrite service, so its name
must start with ``proxy:``; here every replica shares it in Redis, where
the name becomes part of each entry's key and the entry expires by itself.
The entry's value is Postfix's: ``time;password-hash;dsn;reply``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time

from redis.exceptions import RedisError

from postbus.config.conv import ConfigError
from postbus.maps import context

log = logging.getLogger("postbus.delivery")

_ENTRY = re.compile(r"(\d+);([^;]+);([245]\.\d{1,3}\.\d{1,3});(.+)", re.S)


def _hash(password: str) -> str:
    """base64 of the SHA-1 of the password (smtp_sasl_auth_cache_make_pass())."""
    return base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


class AuthCache:
    """The failure table of one transport."""

    def __init__(self, name: str, ttl: float, param: str) -> None:
        if len(name.replace(",", " ").split()) > 1:
            raise ConfigError(f'SASL authentication cache name "{name}" contains multiple '
                              "values", parameter=param)
        if not name.startswith("proxy:"):
            raise ConfigError(f'SASL authentication cache name "{name}" must start with '
                              '"proxy:', parameter=param)
        self.name = name
        self.ttl = int(ttl)

    def _key(self, host: str, user: str) -> str:
        return f"postbus:sasl_auth_cache:{self.name}:{host};{user}"

    async def find(self, host: str, user: str, password: str) -> tuple[str, str] | None:
        """(dsn, reply) of a failure still valid for these credentials, or None."""
        key = self._key(host, user)
        try:
            raw = await context.redis_client().get(key)
            if raw is None:
                return None
            entry = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            found = _ENTRY.fullmatch(entry)
            if found is None:
                log.warning("bad smtp_sasl_auth_cache entry: %.100s", entry)
            elif int(found.group(1)) + self.ttl >= time.time() \
                    and found.group(2) == _hash(password):
                return found.group(3), found.group(4)
            await context.redis_client().delete(key)  # expired, changed or malformed
        except RedisError as exc:
            log.warning("SASL auth failure map %s: lookup failed for %s;%s: %s",
                        self.name, host, user, exc)
        return None

    async def store(self, host: str, user: str, password: str, dsn: str, reply: str) -> None:
        value = f"{int(time.time())};{_hash(password)};{dsn};{reply}"
        try:
            await context.redis_client().set(self._key(host, user), value.encode(),
                                             ex=max(self.ttl, 1))
        except RedisError as exc:
            log.warning("SASL auth failure map %s: update failed for %s;%s: %s",
                        self.name, host, user, exc)
