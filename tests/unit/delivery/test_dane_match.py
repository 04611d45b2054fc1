"""TLSA records against certificate chains made here (delivery_smtp.dane_match)."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from delivery_smtp.dane_match import Tlsa, verify
from tests.tls_certs import issue, new_key

CA_KEY = new_key("ec")
CA = issue("DANE Test CA", CA_KEY, ca=True)
LEAF_KEY = new_key("ec")
LEAF = issue("mx.remote.test", LEAF_KEY, CA_KEY, CA, dns=("mx.remote.test",))
WILD = issue("wild", LEAF_KEY, CA_KEY, CA, dns=("*.remote.test",))


def _expired() -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(LEAF.subject).issuer_name(CA.subject)
            .public_key(LEAF_KEY.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx.remote.test")]),
                           critical=False)
            .sign(CA_KEY, hashes.SHA256()))


EXPIRED = _expired()
OTHER_KEY = new_key("ec")
OTHER = issue("Another CA", OTHER_KEY, ca=True)
DER = [LEAF.public_bytes(Encoding.DER), CA.public_bytes(Encoding.DER)]


def data(cert: object, selector: int, mtype: int) -> bytes:
    raw = cert.public_bytes(Encoding.DER) if selector == 0 else (  # type: ignore[attr-defined]
        cert.public_key().public_bytes(  # type: ignore[attr-defined]
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return raw if mtype == 0 else hashlib.new({1: "sha256", 2: "sha512"}[mtype], raw).digest()


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ee_matches_the_leaf_by_certificate_or_key(selector: int, mtype: int) -> None:
    got = verify([Tlsa(3, selector, mtype, data(LEAF, selector, mtype))], DER, ["x.test"])
    assert (got.ok, got.depth, got.usage) == (True, 0, 3)


def test_dane_ee_ignores_expiry_and_names() -> None:
    chain = [EXPIRED.public_bytes(Encoding.DER)]
    assert verify([Tlsa(3, 1, 1, data(EXPIRED, 1, 1))], chain, ["nowhere.test"]).ok


@pytest.mark.parametrize("record", [
    Tlsa(1, 1, 1, data(LEAF, 1, 1)),  # PKIX-EE
    Tlsa(0, 0, 1, data(CA, 0, 1)),  # PKIX-TA
    Tlsa(3, 2, 1, data(LEAF, 1, 1)),  # no such selector
    Tlsa(3, 1, 3, data(LEAF, 1, 1)),  # no such matching type
    Tlsa(3, 1, 1, data(LEAF, 1, 1)[:31]),  # a SHA2-256 digest one byte short
])
def test_records_unusable_for_smtp_never_match(record: Tlsa) -> None:
    assert not record.usable
    got = verify([record], DER, ["mx.remote.test"])
    assert (got.code, got.text) == (65, "No matching DANE TLSA records")


def test_dane_ta_needs_the_chain_and_the_mx_host_name() -> None:
    ta = [Tlsa(2, 0, 1, data(CA, 0, 1))]
    assert verify(ta, DER, ["mx.remote.test"]).depth == 1
    assert verify([Tlsa(2, 1, 2, data(CA, 1, 2))], DER, ["mx.remote.test"]).ok
    assert not verify(ta, DER[:1], ["mx.remote.test"]).ok  # the anchor was not sent
    got = verify(ta, DER, ["mx.other.test"])
    assert (got.code, got.text) == (62, "hostname mismatch")
    wild = [WILD.public_bytes(Encoding.DER), DER[1]]
    assert verify(ta, wild, ["mx.remote.test"]).ok
    assert not verify(ta, wild, ["a.mx.remote.test"]).ok  # one label only


def test_dane_ta_checks_signatures_and_dates_below_the_anchor() -> None:
    expired = [EXPIRED.public_bytes(Encoding.DER), DER[1]]
    got = verify([Tlsa(2, 0, 1, data(CA, 0, 1))], expired, ["mx.remote.test"])
    assert (got.code, got.text) == (10, "certificate has expired")
    forged = [DER[0], OTHER.public_bytes(Encoding.DER)]  # an anchor that did not sign it
    got = verify([Tlsa(2, 0, 1, data(OTHER, 0, 1))], forged, ["mx.remote.test"])
    assert (got.code, got.text) == (7, "certificate signature failure")


def test_a_dane_ta_record_does_not_match_the_leaf() -> None:
    got = verify([Tlsa(2, 1, 1, data(LEAF, 1, 1))], DER, ["mx.remote.test"])
    assert not got.ok
