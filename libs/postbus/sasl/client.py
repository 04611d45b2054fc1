"""SMTP AUTH on the client side: the mechanisms a client speaks (≈ xsasl_cyrus_client.c).

Postfix's SMTP client talks SASL through Cyrus; these are the mechanisms
Cyrus gives it that need nothing but a user name and a password:
``CRAM-MD5`` (RFC 2195), ``PLAIN`` (RFC 4616) and ``LOGIN``. Each carries
the properties Cyrus gives it, in the words of :mod:`postbus.sasl`, so that
the security options keep the same ones: ``noplaintext`` (the default)
drops PLAIN and LOGIN, ``noactive`` and ``nodictionary`` drop all three,
``forward_secrecy`` and ``mutual_auth`` leave nothing. Of what the server
offers and the options keep, the strongest is used, as Cyrus picks:
CRAM-MD5, then PLAIN, then LOGIN.

Challenges and responses are raw octets here; the SMTP client does the
base64 on the wire.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from postbus.sasl import Mechanism, filter_mechanisms

__all__ = ["MECHANISMS", "ClientExchange", "NoMechanism", "SaslClientError", "choose", "start"]

#: Strongest first (Cyrus's choice among those the server offers).
MECHANISMS = [
    Mechanism("CRAM-MD5", frozenset({"active", "dictionary"})),
    Mechanism("PLAIN", frozenset({"plaintext", "active", "dictionary"})),
    Mechanism("LOGIN", frozenset({"plaintext", "active", "dictionary"})),
]


class SaslClientError(Exception):
    """The exchange cannot go on; the message is what Postfix reports after the colon."""


class NoMechanism(SaslClientError):
    def __init__(self) -> None:
        super().__init__("no mechanism available")  # Cyrus's sasl_errstring(SASL_NOMECH)


def choose(offered: list[str], options: frozenset[str]) -> str | None:
    """The mechanism to use of those the server offered, or None."""
    wanted = {name.upper() for name in offered}
    usable = filter_mechanisms(MECHANISMS, options)
    return next((name for name in usable if name in wanted), None)


@dataclass
class ClientExchange:
    """One AUTH conversation: :attr:`initial` goes with the command, then one
    response per server challenge (:meth:`step`)."""

    mechanism: str
    username: str
    password: str
    steps: int = 0

    @property
    def initial(self) -> bytes | None:
        """The initial response (RFC 4954), or None when the server speaks first."""
        if self.mechanism == "PLAIN":
            return b"\0" + self.username.encode() + b"\0" + self.password.encode()
        return None

    def step(self, challenge: bytes) -> bytes:
        """The answer to one decoded server challenge."""
        self.steps += 1
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


def start(offered: list[str], options: frozenset[str], username: str,
          password: str) -> ClientExchange:
    """The exchange with the best usable mechanism; NoMechanism when none is."""
    name = choose(offered, options)
    if name is None:
        raise NoMechanism()
    return ClientExchange(name, username, password)
