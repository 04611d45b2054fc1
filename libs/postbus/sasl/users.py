"""The built-in SASL user store: one Redis hash, user name -> argon2 hash (argon2-cffi).

``postbus saslpasswd`` writes it, smtpd (smtpd_sasl_type = postbus) reads
it; every ingress replica sees the same users.  The key is
postbus_sasl_users_key.  Hashing and checking run in a thread: argon2 is
meant to be slow, and the event loop has other sessions to serve.  A hash
made with weaker parameters than argon2-cffi's current ones is renewed at
the next successful login.

SCRAM cannot use an argon2 hash: beside it, in the hash ``<key>:scram``,
each user has SCRAM-SHA-256 and SCRAM-SHA-1 keys (:class:`ScramKeys`,
4096 iterations), written whenever the password is set.  Users made before
there were SCRAM keys get them at their next password set, or at their next
successful PLAIN or LOGIN, the only moments the password is known.
"""

from __future__ import annotations

import asyncio
import contextlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis

from postbus.sasl.scram import HASHES, ScramKeys

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

    @property
    def scram_key(self) -> str:
        return self.key + ":scram"

    async def set(self, name: str, password: str) -> None:
        hashed, keys = await asyncio.to_thread(_hash_all, password)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, name, hashed)
            pipe.hset(self.scram_key, name, keys)
            await pipe.execute()

    async def delete(self, name: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key, name)
            pipe.hdel(self.scram_key, name)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def scram_keys(self, name: str, mechanism: str) -> ScramKeys | None:
        """The user's keys for one SCRAM mechanism, or None (no user, or none yet)."""
        stored = await self.redis.hget(self.scram_key, name)
        for item in _text(stored).split() if stored is not None else ():
            mech, _, text = item.partition("=")
            if mech == mechanism:
                return ScramKeys.parse(text)
        return None

    async def names(self) -> list[str]:
        return sorted(_text(k) for k in await self.redis.hkeys(self.key))

    async def check(self, name: str, password: str) -> bool:
        """The password is this user's (raises redis errors: a temporary failure)."""
        stored = await self.redis.hget(self.key, name)
        hashed = _text(stored) if stored is not None else _DUMMY
        ok = False
        with contextlib.suppress(VerificationError, InvalidHashError):
            ok = await asyncio.to_thread(_HASHER.verify, hashed, password)
        if ok and stored is not None and (_HASHER.check_needs_rehash(hashed)
                                          or not await self.redis.hexists(self.scram_key, name)):
            await self.set(name, password)  # older argon2 parameters, or no SCRAM keys yet
        return ok and stored is not None


def _hash_all(password: str) -> tuple[str, str]:
    """The argon2 hash and the SCRAM keys (``MECH=i:salt:stored:server`` words)."""
    keys = " ".join(f"{mech}={ScramKeys.derive(algo, password).text()}"
                    for mech, algo in HASHES.items())
    return _HASHER.hash(password), keys


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
