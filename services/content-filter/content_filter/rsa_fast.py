"""dkimpy's RSA signing step done by OpenSSL (through cryptography) instead of Python.

dkimpy signs with its own pure-Python RSA: about 25 ms of CPU per message
for a 2048-bit key, holding the event loop. PKCS #1 v1.5 signatures are
deterministic, so OpenSSL makes exactly the same bytes, some 80 times
faster. :func:`install` puts :func:`sign` where dkimpy looks the function
up (``dkim.RSASSA_PKCS1_v1_5_sign``, read at each call); everything else
(canonicalization, header selection, the tag list) stays dkimpy's.
"""

from __future__ import annotations

import hashlib
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

_HASHES: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}
_KEYS: dict[tuple[int, int], rsa.RSAPrivateKey] = {}
_PYTHON_SIGN = dkim.RSASSA_PKCS1_v1_5_sign


def _key(pk: dict[str, Any]) -> rsa.RSAPrivateKey:
    """The OpenSSL key for dkimpy's parsed key (a dict of its numbers), made once."""
    ident = (pk["modulus"], pk["privateExponent"])
    key = _KEYS.get(ident)
    if key is None:
        public = rsa.RSAPublicNumbers(pk["publicExponent"], pk["modulus"])
        key = rsa.RSAPrivateNumbers(
            pk["prime1"], pk["prime2"], pk["privateExponent"], pk["exponent1"],
            pk["exponent2"], pk["coefficient"], public).private_key()
        if len(_KEYS) > 1000:
            _KEYS.clear()
        _KEYS[ident] = key
    return key


def sign(digest: hashlib._Hash, private_key: dict[str, Any]) -> bytes:
    algorithm = _HASHES.get(digest.name.lower())
    if algorithm is None:
        return bytes(_PYTHON_SIGN(digest, private_key))
    return _key(private_key).sign(digest.digest(), padding.PKCS1v15(), Prehashed(algorithm))


def install() -> None:
    dkim.RSASSA_PKCS1_v1_5_sign = sign
