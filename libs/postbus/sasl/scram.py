"""SCRAM (RFC 5802, RFC 7677) primitives shared by the SMTP client and the server.

Both sides derive the same keys: SaltedPassword = PBKDF2(password, salt, i),
ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = H(ClientKey),
ServerKey = HMAC(SaltedPassword, "Server Key").  A server keeps only
StoredKey and ServerKey (with salt and i): enough to check a client's proof
and to prove itself, never enough to log in as the user.

:class:`ScramKeys` is what the built-in user store saves per mechanism, as
one text ``i:salt:storedkey:serverkey`` (base64 fields).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

__all__ = ["HASHES", "ITERATIONS", "ScramKeys", "attributes", "client_proof", "escape_name",
           "hmac_digest", "salted_password", "unescape_name", "xor"]

#: Mechanism name -> hashlib name.
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
#: RFC 7677's minimum for SCRAM-SHA-256 (also Dovecot's and Cyrus's default).
ITERATIONS = 4096


def salted_password(algo: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(algo, password.encode(), salt, iterations)


def hmac_digest(key: bytes, data: bytes, algo: str) -> bytes:
    return hmac.new(key, data, algo).digest()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def client_proof(algo: str, salted: bytes, auth_message: bytes) -> tuple[bytes, bytes]:
    """(ClientProof, ServerSignature) for one AuthMessage."""
    client_key = hmac_digest(salted, b"Client Key", algo)
    stored_key = hashlib.new(algo, client_key).digest()
    server_key = hmac_digest(salted, b"Server Key", algo)
    return (xor(client_key, hmac_digest(stored_key, auth_message, algo)),
            hmac_digest(server_key, auth_message, algo))


def attributes(message: bytes) -> dict[str, str]:
    """``a=x,b=y`` as a dict; ValueError when it is not that."""
    return dict(part.split("=", 1) for part in message.decode().split(","))


def escape_name(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_name(text: str) -> str | None:
    """saslname -> name; None for a stray ``=`` (RFC 5802: the exchange fails)."""
    out = text.replace("=2C", ",").replace("=3D", "\0")
    return None if "=" in out else out.replace("\0", "=")


@dataclass(frozen=True)
class ScramKeys:
    """What a server stores for one user and one SCRAM mechanism."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def derive(cls, algo: str, password: str, iterations: int = ITERATIONS,
               salt: bytes | None = None) -> ScramKeys:
        salt = salt if salt is not None else os.urandom(16)
        salted = salted_password(algo, password, salt, iterations)
        client_key = hmac_digest(salted, b"Client Key", algo)
        return cls(iterations, salt, hashlib.new(algo, client_key).digest(),
                   hmac_digest(salted, b"Server Key", algo))

    def text(self) -> str:
        b64 = base64.b64encode
        return (f"{self.iterations}:{b64(self.salt).decode()}:"
                f"{b64(self.stored_key).decode()}:{b64(self.server_key).decode()}")

    @classmethod
    def parse(cls, text: str) -> ScramKeys | None:
        try:
            i, salt, stored, server = text.split(":")
            return cls(int(i), base64.b64decode(salt, validate=True),
                       base64.b64decode(stored, validate=True),
                       base64.b64decode(server, validate=True))
        except (ValueError, binascii.Error):
            return None

    def verify(self, algo: str, auth_message: bytes, proof: bytes) -> bytes | None:
        """The ServerSignature when ``proof`` shows the client knew the password."""
        signature = hmac_digest(self.stored_key, auth_message, algo)
        if len(proof) != len(signature):
            return None
        client_key = xor(proof, signature)
        if not hmac.compare_digest(hashlib.new(algo, client_key).digest(), self.stored_key):
            return None
        return hmac_digest(self.server_key, auth_message, algo)
