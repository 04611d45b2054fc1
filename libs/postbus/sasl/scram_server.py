"""SCRAM-SHA-256 and SCRAM-SHA-1 on the server side of the built-in backend (RFC 5802, 7677).

The exchange in SMTP AUTH (RFC 4954): client-first (as the initial response,
or after an empty challenge), server-first as a 334 challenge, client-final,
then the server's signature as a last 334 that the client answers with an
empty line before 235, as Dovecot does it.  No channel binding (no -PLUS
mechanisms): a client that asks for it (``p=``) fails.  The keys come from
the user store (:meth:`UserStore.scram_keys`); a user without keys, or with
none yet, gets a made-up salt and fails at the proof, so that the exchange
does not tell who exists.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import secrets
from dataclasses import dataclass

from redis.exceptions import RedisError

from postbus.sasl import Status, Step
from postbus.sasl.scram import HASHES, ITERATIONS, ScramKeys, attributes, unescape_name
from postbus.sasl.users import UserStore, valid_username

log = logging.getLogger("postbus.smtpd")

_MOCK_SECRET = os.urandom(32)  # made-up salts for unknown users (per process)


@dataclass
class ScramExchange:
    store: UserStore
    mechanism: str
    realm: str = ""
    username: str | None = None
    _gs2: str = ""
    _first_bare: str = ""
    _server_first: str = ""
    _nonce: str = ""
    _keys: ScramKeys | None = None
    _signature: bytes | None = None

    @property
    def algo(self) -> str:
        return HASHES[self.mechanism]

    async def first(self, data: bytes | None) -> Step:
        if data is None:
            return Step(Status.MORE, "")  # the client speaks first, after an empty challenge
        try:
            text = data.decode()
            flag, authzid, bare = text.split(",", 2)
            attrs = attributes(bare.encode())
        except (UnicodeDecodeError, ValueError):
            return Step(Status.FAIL, "Invalid client-first message")
        if flag not in ("n", "y") or (authzid and not authzid.startswith("a=")) \
                or not bare.startswith("n=") or "m" in attrs or not attrs.get("r"):
            return Step(Status.FAIL, "Invalid client-first message")
        name = unescape_name(attrs["n"])
        if name is None:
            return Step(Status.FAIL, "Invalid client-first message")
        if self.realm and "@" not in name:
            name = f"{name}@{self.realm}"
        authz = unescape_name(authzid[2:]) if authzid else None
        if not valid_username(name) or (authz and authz != name):
            return Step(Status.FAIL, "", name if valid_username(name) else None)
        self.username = name
        try:
            self._keys = await self.store.scram_keys(name, self.mechanism)
        except (RedisError, OSError) as exc:
            log.warning("SASL: user store %s: %s", self.store.key, exc)
            return Step(Status.TEMP, "Authentication backend error", name)
        keys = self._keys or ScramKeys(
            ITERATIONS, hmac.new(_MOCK_SECRET, name.encode(), "sha256").digest()[:16], b"", b"")
        self._gs2, self._first_bare = f"{flag},{authzid},", bare
        self._nonce = attrs["r"] + secrets.token_urlsafe(18)
        self._server_first = (f"r={self._nonce},s={base64.b64encode(keys.salt).decode()},"
                              f"i={keys.iterations}")
        return Step(Status.MORE, base64.b64encode(self._server_first.encode()).decode())

    async def next(self, data: bytes) -> Step:
        if self._signature is not None:  # the client's empty answer to our signature
            return Step(Status.DONE if not data else Status.FAIL, "", self.username)
        without_proof, sep, proof_text = data.partition(b",p=")
        try:
            attrs = attributes(without_proof)
            proof = base64.b64decode(proof_text, validate=True)
        except (UnicodeDecodeError, ValueError, binascii.Error):
            return Step(Status.FAIL, "Invalid client-final message", self.username)
        channel = base64.b64encode(self._gs2.encode()).decode()
        if not sep or attrs.get("c") != channel or attrs.get("r") != self._nonce:
            return Step(Status.FAIL, "Invalid client-final message", self.username)
        auth_message = ",".join((self._first_bare, self._server_first,
                                 without_proof.decode())).encode()
        signature = self._keys.verify(self.algo, auth_message, proof) if self._keys else None
        if signature is None:
            return Step(Status.FAIL, "", self.username)
        self._signature = signature
        return Step(Status.MORE, base64.b64encode(b"v=" + base64.b64encode(signature)).decode())
