"""SMTP AUTH on the client side: the mechanisms a client speaks (≈ xsasl_cyrus_client.c).

Postfix's SMTP client talks SASL through Cyrus; these are the mechanisms
Cyrus gives it that need nothing but a user name and a password:
``SCRAM-SHA-256`` and ``SCRAM-SHA-1`` (RFC 7677, 5802; no channel binding),
``CRAM-MD5`` (RFC 2195), ``PLAIN`` (RFC 4616) and ``LOGIN``. Each carries
the security flags Cyrus gives it, and the security options keep what
Cyrus keeps: ``noplaintext`` (the default) drops PLAIN and LOGIN,
``noactive`` all but SCRAM, ``nodictionary`` all, ``mutual_auth`` all but
SCRAM, ``forward_secrecy`` all. Of what the server offers and the options
keep, Cyrus takes the first in the server's order unless a later one has a
security flag the first lacks (sasl_client_start()): so SCRAM or CRAM-MD5
before PLAIN and LOGIN, and PLAIN or LOGIN as the server lists them.

Challenges and responses are raw octets here; the SMTP client does the
base64 on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from postbus.sasl import Mechanism, filter_mechanisms, scram

__all__ = ["MECHANISMS", "ClientExchange", "NoMechanism", "SaslClientError", "choose", "start"]

#: The mechanisms and what they are exposed to (postbus.sasl's words, for the options).
MECHANISMS = [
    Mechanism("SCRAM-SHA-256", frozenset({"dictionary", "mutual-auth"})),
    Mechanism("SCRAM-SHA-1", frozenset({"dictionary", "mutual-auth"})),
    Mechanism("CRAM-MD5", frozenset({"active", "dictionary"})),
    Mechanism("PLAIN", frozenset({"plaintext", "active", "dictionary"})),
    Mechanism("LOGIN", frozenset({"plaintext", "active", "dictionary"})),
]
#: Cyrus's security_flags of each (what choose() compares).
_CYRUS_FLAGS = {
    "SCRAM-SHA-256": frozenset({"noplaintext", "noactive", "noanonymous", "mutual_auth"}),
    "SCRAM-SHA-1": frozenset({"noplaintext", "noactive", "noanonymous", "mutual_auth"}),
    "CRAM-MD5": frozenset({"noplaintext", "noanonymous"}),
    "PLAIN": frozenset({"noanonymous"}),
    "LOGIN": frozenset({"noanonymous"}),
}


class SaslClientError(Exception):
    """The exchange cannot go on; the message is what Postfix reports after the colon."""


class NoMechanism(SaslClientError):
    def __init__(self) -> None:
        super().__init__("no mechanism available")  # Cyrus's sasl_errstring(SASL_NOMECH)


def choose(offered: list[str], options: frozenset[str]) -> str | None:
    """The mechanism to use of those the server offered, or None."""
    usable = set(filter_mechanisms(MECHANISMS, options))
    best: str | None = None
    for name in (m.upper() for m in offered):
        if name in usable and (best is None or _CYRUS_FLAGS[name] - _CYRUS_FLAGS[best]):
            best = name
    return best


@dataclass
class ClientExchange:
    """One AUTH conversation: :attr:`initial` goes with the command, then one
    response per server challenge (:meth:`step`)."""

    mechanism: str
    username: str
    password: str
    steps: int = 0
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    _server_signature: bytes = b""  # SCRAM: what the server must prove at the end

    @property
    def initial(self) -> bytes | None:
        """The initial response (RFC 4954), or None when the server speaks first."""
        if self.mechanism == "PLAIN":
            return b"\0" + self.username.encode() + b"\0" + self.password.encode()
        if self.mechanism in scram.HASHES:
            return b"n,," + self._first_bare()
        return None

    def _first_bare(self) -> bytes:
        return f"n={scram.escape_name(self.username)},r={self.nonce}".encode()

    def step(self, challenge: bytes) -> bytes:
        """The answer to one decoded server challenge."""
        self.steps += 1
        if self.mechanism in scram.HASHES:
            return self._scram_step(challenge)
        if self.mechanism == "CRAM-MD5":
            if self.steps > 1:
                raise SaslClientError("authentication protocol error")
            digest = hmac.new(self.password.encode(), challenge, hashlib.md5).hexdigest()
            return f"{self.username} {digest}".encode()
        if self.mechanism == "LOGIN":  # "Username:" then "Password:" (any text: Cyrus too)
            if self.steps > 2:
                raise SaslClientError("authentication protocol error")
            return (self.username if self.steps == 1 else self.password).encode()
        if self.mechanism == "PLAIN" and not challenge and self.steps == 1:
            initial = self.initial  # the server asked for what we did not send first
            assert initial is not None
            return initial
        raise SaslClientError("authentication protocol error")

    def _scram_step(self, challenge: bytes) -> bytes:
        """RFC 5802: the client-final message for the server-first one, then an empty
        answer once the server's signature proves it knew the password too."""
        try:
            attrs = scram.attributes(challenge)
        except (UnicodeDecodeError, ValueError) as exc:
            raise SaslClientError("authentication protocol error") from exc
        if "e" in attrs:
            raise SaslClientError(f"authentication failure: {attrs['e']}")
        algo = scram.HASHES[self.mechanism]
        if self.steps == 2:
            if attrs.get("v", "").encode() != base64.b64encode(self._server_signature):
                raise SaslClientError("server signature does not verify")
            return b""
        if self.steps != 1 or "m" in attrs or not attrs.get("r", "").startswith(self.nonce) \
                or len(attrs["r"]) == len(self.nonce) or not attrs.get("i", "").isdigit():
            raise SaslClientError("authentication protocol error")
        try:
            salt = base64.b64decode(attrs.get("s", ""), validate=True)
        except ValueError as exc:
            raise SaslClientError("authentication protocol error") from exc
        salted = scram.salted_password(algo, self.password, salt, int(attrs["i"]))
        without_proof = f"c=biws,r={attrs['r']}".encode()
        auth_message = self._first_bare() + b"," + challenge + b"," + without_proof
        proof, self._server_signature = scram.client_proof(algo, salted, auth_message)
        return without_proof + b",p=" + base64.b64encode(proof)


def start(offered: list[str], options: frozenset[str], username: str,
          password: str) -> ClientExchange:
    """The exchange with the best usable mechanism; NoMechanism when none is."""
    name = choose(offered, options)
    if name is None:
        raise NoMechanism()
    return ClientExchange(name, username, password)
