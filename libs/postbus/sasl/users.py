"""The built-in SASL user store: one Redis hash, user name -> argon2 hash (argon2-cffi).

``postbus saslpasswd`` writes it, smtpd (smtpd_sasl_type = postbus) reads
it; every ingress replica sees the same users.  The key is
postbus_sasl_users_key.  Hashing and checking run in a thread: argon2 is
meant to be slow, and the event loop has other sessions to serve.  A hash
made with weaker parameters than argon2-cffi's current ones is renewed at
the next successful login.
"""

from __future__ import annotations

import asyncio
import contextlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis

__all__ = ["UserStore", "valid_username"]

_HASHER = PasswordHasher()
#: Checked when the user does not exist, so that both answers take as long.
_DUMMY = _HASHER.hash("postbus-no-such-user")
MAX_NAME = 255


def valid_username(name: str) -> bool:
    """A name that can travel in SMTP logs and the Dovecot protocol: printable, no TAB."""
    return 0 < len(name) <= MAX_NAME and name.isprintable() and "\t" not in name


class UserStore:
    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def set(self, name: str, password: str) -> None:
        hashed = await asyncio.to_thread(_HASHER.hash, password)
        await self.redis.hset(self.key, name, hashed)

    async def delete(self, name: str) -> bool:
        return bool(await self.redis.hdel(self.key, name))

    async def names(self) -> list[str]:
        return sorted(_text(k) for k in await self.redis.hkeys(self.key))

    async def check(self, name: str, password: str) -> bool:
        """The password is this user's (raises redis errors: a temporary failure)."""
        stored = await self.redis.hget(self.key, name)
        hashed = _text(stored) if stored is not None else _DUMMY
        ok = False
        with contextlib.suppress(VerificationError, InvalidHashError):
            ok = await asyncio.to_thread(_HASHER.verify, hashed, password)
        if ok and stored is not None and _HASHER.check_needs_rehash(hashed):
            await self.set(name, password)  # stored with older argon2 parameters
        return ok and stored is not None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
