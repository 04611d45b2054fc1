"""smtpd_sasl_type = postbus: PLAIN and LOGIN against the Redis user store, and
SCRAM-SHA-256 and SCRAM-SHA-1 (:mod:`.scram_server`) with postbus_sasl_scram = yes.

The conversation is Dovecot's, so that a client sees the same thing with
either backend: PLAIN without an initial response gets an empty challenge,
LOGIN asks ``Username:`` then ``Password:``; bad base64 fails with the
reason Dovecot gives.  PLAIN with an authorization identity other than
the user is refused (no proxy users).  smtpd_sasl_local_domain, when set,
is the realm of a name without ``@`` (user -> user@realm), as Cyrus does.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from postbus.config.loader import Config
from postbus.sasl import Mechanism, Status, Step
from postbus.sasl.scram import HASHES
from postbus.sasl.scram_server import ScramExchange
from postbus.sasl.users import UserStore, valid_username

log = logging.getLogger("postbus.smtpd")

MECHANISMS = [Mechanism("PLAIN", frozenset({"plaintext"})),
              Mechanism("LOGIN", frozenset({"plaintext"}))]
SCRAM = [Mechanism("SCRAM-SHA-256", frozenset({"dictionary", "mutual-auth"})),
         Mechanism("SCRAM-SHA-1", frozenset({"dictionary", "mutual-auth"}))]
USERNAME_CHALLENGE = base64.b64encode(b"Username:").decode()
PASSWORD_CHALLENGE = base64.b64encode(b"Password:").decode()
MAX_RESPONSE = 4096  # decoded bytes; Dovecot's limit on an auth request is of this order


@dataclass
class BuiltinBackend:
    key: str
    realm: str
    scram: bool = False  # postbus_sasl_scram: offer SCRAM-SHA-256 and SCRAM-SHA-1 too

    @classmethod
    def from_config(cls, cfg: Config) -> BuiltinBackend:
        return cls(cfg.get("postbus_sasl_users_key"), cfg.get("smtpd_sasl_local_domain").strip(),
                   cfg.bool("postbus_sasl_scram"))

    async def mechanisms(self) -> list[Mechanism] | None:
        return MECHANISMS + SCRAM if self.scram else list(MECHANISMS)

    def exchange(self, *, service: str, client_addr: str, server_addr: str,
                 secured: bool) -> BuiltinExchange:
        return BuiltinExchange(self)

    async def aclose(self) -> None:
        return None  # the Redis client belongs to the maps context

    def store(self) -> UserStore:
        from postbus.maps.context import redis_client

        return UserStore(redis_client(), self.key)


@dataclass
class BuiltinExchange:
    backend: BuiltinBackend
    mechanism: str = ""
    username: str | None = None
    scram: ScramExchange | None = None

    async def first(self, mechanism: str, response: str | None) -> Step:
        self.mechanism = mechanism.upper()
        if self.backend.scram and self.mechanism in HASHES:
            self.scram = ScramExchange(self.backend.store(), self.mechanism, self.backend.realm)
            data = None if response is None else _decode(response, initial=True)
            if response is not None and data is None:
                return Step(Status.FAIL, "Invalid base64 data in initial response")
            return await self.scram.first(data)
        if self.mechanism not in ("PLAIN", "LOGIN"):
            return Step(Status.FAIL, "Invalid authentication mechanism")
        if response is None:
            challenge = "" if self.mechanism == "PLAIN" else USERNAME_CHALLENGE
            return Step(Status.MORE, challenge)
        return await self._take(response, "initial")

    async def next(self, response: str) -> Step:
        if self.scram is not None:
            data = _decode(response, initial=False)
            if data is None:
                return Step(Status.FAIL, "Invalid base64 data in continued response")
            return await (self.scram.next(data) if self.scram.username is not None
                          else self.scram.first(data))
        return await self._take(response, "continued")

    async def _take(self, response: str, which: str) -> Step:
        data = _decode(response, initial=which == "initial")
        if data is None:
            return Step(Status.FAIL, f"Invalid base64 data in {which} response")
        if self.mechanism == "PLAIN":
            parts = data.split(b"\x00")
            if len(parts) != 3:
                return Step(Status.FAIL)
            authzid, user, password = parts
            if authzid and authzid != user:
                return Step(Status.FAIL, "", _text(user))
            return await self._check(user, password)
        if self.username is None:
            self.username = _text(data)
            return Step(Status.MORE, PASSWORD_CHALLENGE)
        return await self._check(self.username.encode("utf-8", "surrogateescape"), data)

    async def _check(self, raw_user: bytes, raw_password: bytes) -> Step:
        name = _text(raw_user)
        if self.backend.realm and "@" not in name:
            name = f"{name}@{self.backend.realm}"
        if not valid_username(name):
            return Step(Status.FAIL)
        try:
            ok = await self.backend.store().check(
                name, raw_password.decode("utf-8", "surrogateescape"))
        except (RedisError, OSError) as exc:
            log.warning("SASL: user store %s: %s", self.backend.key, exc)
            return Step(Status.TEMP, "Authentication backend error", name)
        return Step(Status.DONE, "", name) if ok else Step(Status.FAIL, "", name)

    async def close(self) -> None:
        return None


def _decode(response: str, initial: bool) -> bytes | None:
    """Strict base64, or None; bounded. ``=`` alone is an empty initial response
    (RFC 4954), and bad base64 in a continued one, as Dovecot has it."""
    if response == "=" and initial:
        return b""
    if len(response) > MAX_RESPONSE * 4 // 3 + 4:
        return None
    try:
        return base64.b64decode(response, validate=True)
    except (binascii.Error, ValueError):
        return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
