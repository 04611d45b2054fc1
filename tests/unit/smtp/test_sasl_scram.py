"""SCRAM on the server side (postbus.sasl.scram): the stored keys check the RFC's proofs."""

from __future__ import annotations

import base64

import pytest

from postbus.sasl.scram import ScramKeys, unescape_name

RFC = [  # (mechanism's hash, salt, client-first-bare, server-first, without proof, proof, v)
    ("sha1", "QSXCR+Q6sek8bf92", "n=user,r=fyko+d2lbbFgONRv9qkxdawL",  # RFC 5802 section 5
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j", "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
     "rmF9pqV8S7suAoZWja4dJRkFsKQ="),
    ("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==", "n=user,r=rOprNGfwEbeRWgbNEkqO",  # RFC 7677 section 3
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
     "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
]


@pytest.mark.parametrize(("algo", "salt", "first", "server", "final", "proof", "v"), RFC)
def test_stored_keys_verify_the_rfc_proof(algo: str, salt: str, first: str, server: str,
                                          final: str, proof: str, v: str) -> None:
    keys = ScramKeys.derive(algo, "pencil", 4096, base64.b64decode(salt))
    again = ScramKeys.parse(keys.text())
    assert again == keys
    message = f"{first},{server},{final}".encode()
    assert keys.verify(algo, message, base64.b64decode(proof)) == base64.b64decode(v)
    wrong = ScramKeys.derive(algo, "pencil!", 4096, base64.b64decode(salt))
    assert wrong.verify(algo, message, base64.b64decode(proof)) is None
    assert keys.verify(algo, message, b"short") is None


def test_bad_stored_text_and_names() -> None:
    assert ScramKeys.parse("4096:not base64:x:y") is None
    assert ScramKeys.parse("many") is None
    assert unescape_name("u=2C=3Dv") == "u,=v"
    assert unescape_name("u=x") is None
