"""A server certificate chain against TLSA records (RFC 6698, RFC 7671, RFC 7672), as
OpenSSL's DANE verifier does it for Postfix (tls_dane.c hands the records to OpenSSL).

Only the records usable for SMTP count (RFC 7672 §3.1.3): DANE-TA(2) and
DANE-EE(3), selector Cert(0) or SPKI(1), matching type Full(0), SHA2-256(1)
or SHA2-512(2). Then:

* DANE-EE: the leaf certificate (or its public key) matches; its names and
  dates do not matter (RFC 7672 §3.1.1);
* DANE-TA: a certificate the server sent above the leaf matches, the chain
  from the leaf up to it is signed link by link and within its dates, and the
  leaf names the MX host (DNS subjectAltNames, else the CN; ``*.`` covers one
  label). A trust anchor that the server does not send (a bare ``2 1 0`` key
  that is nowhere in the chain) cannot be used here: RFC 7671 §5.2.2 asks
  servers to send it, and such a session is not verified.

The failures are OpenSSL's codes and texts, which Postfix logs:
``num=65:No matching DANE TLSA records``, ``num=62:hostname mismatch``.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DANE_TA, DANE_EE = 2, 3
NO_MATCH = (65, "No matching DANE TLSA records")
HOSTNAME_MISMATCH = (62, "hostname mismatch")
_DIGESTS = {0: None, 1: "sha256", 2: "sha512"}
_LENGTHS = {1: 32, 2: 64}


@dataclass(frozen=True)
class Tlsa:
    """One TLSA record: ``usage selector mtype data``."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        """DANE-TA or DANE-EE, a known selector and matching type, a digest of the
        right length (≈ tls_dane.c's checks before the record reaches OpenSSL)."""
        if self.usage not in (DANE_TA, DANE_EE) or self.selector not in (0, 1):
            return False
        if self.mtype not in _DIGESTS:
            return False
        return len(self.data) == _LENGTHS[self.mtype] if self.mtype else bool(self.data)

    def matches(self, cert: x509.Certificate) -> bool:
        if self.selector == 0:
            raw = cert.public_bytes(Encoding.DER)
        else:
            raw = cert.public_key().public_bytes(Encoding.DER,
                                                 PublicFormat.SubjectPublicKeyInfo)
        digest = _DIGESTS[self.mtype]
        return (hashlib.new(digest, raw).digest() if digest else raw) == self.data


@dataclass(frozen=True)
class DaneResult:
    """What the chain proved: ``code`` 0 when a record authenticated it."""

    code: int
    text: str
    depth: int = -1  # where the matching record matched (0: the leaf)
    usage: int = 0

    @property
    def ok(self) -> bool:
        return self.code == 0


def verify(records: Sequence[Tlsa], chain_der: Sequence[bytes],
           names: Sequence[str]) -> DaneResult:
    """Check the chain the server sent (leaf first) against the usable ``records``;
    ``names``: what the leaf must name for DANE-TA (the MX host's names)."""
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError:
        return DaneResult(*NO_MATCH)
    usable = [r for r in records if r.usable]
    if not chain:
        return DaneResult(*NO_MATCH)
    for record in usable:
        if record.usage == DANE_EE and record.matches(chain[0]):
            return DaneResult(0, "", 0, DANE_EE)
    failed: DaneResult | None = None
    for depth in range(1, len(chain)):
        if not any(r.usage == DANE_TA and r.matches(chain[depth]) for r in usable):
            continue
        result = _below_anchor(chain[: depth + 1], names)
        if result.ok:
            return DaneResult(0, "", depth, DANE_TA)
        failed = failed or result
    return failed or DaneResult(*NO_MATCH)


def _below_anchor(chain: list[x509.Certificate], names: Sequence[str]) -> DaneResult:
    """The chain from the leaf to the trust anchor (last): signatures, dates, names."""
    now = datetime.datetime.now(datetime.UTC)
    for depth, cert in enumerate(chain[:-1]):
        try:
            cert.verify_directly_issued_by(chain[depth + 1])
        except (ValueError, TypeError, InvalidSignature):
            return DaneResult(7, "certificate signature failure", depth)
        if now < cert.not_valid_before_utc:
            return DaneResult(9, "certificate is not yet valid", depth)
        if now > cert.not_valid_after_utc:
            return DaneResult(10, "certificate has expired", depth)
    if not any(name_matches(name, want) for name in leaf_names(chain[0]) for want in names):
        return DaneResult(*HOSTNAME_MISMATCH, 0)
    return DaneResult(0, "")


def leaf_names(cert: x509.Certificate) -> list[str]:
    """The DNS subjectAltNames, or the subject CN when there are none (RFC 6125)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        found = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        if found:
            return found
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(
        x509.oid.NameOID.COMMON_NAME)][:1]


def name_matches(name: str, want: str) -> bool:
    """Certificate name ``name`` for host ``want``: equal, or a wildcard for one whole
    first label (as OpenSSL's X509_check_host() without partial wildcards)."""
    name, want = name.lower().rstrip("."), want.lower().rstrip(".")
    if not want:
        return False
    if name == want:
        return True
    if name.startswith("*.") and name.count(".") >= 2:  # one whole label, no partial wildcards
        head, dot, rest = want.partition(".")
        return bool(head and dot) and rest == name[2:]
    return False
