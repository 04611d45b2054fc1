"""What one TLS handshake established, and how Postfix writes it down (≈ tls_server_post_accept()).

:func:`session_facts` collects protocol, cipher, key exchange, signatures
and the client certificate (present, trusted, CN, issuer, fingerprints);
:meth:`TlsSession.summary` is the ``Anonymous TLS connection established
from ...`` line of smtpd_tls_loglevel 1 and :meth:`TlsSession.received`
the comment smtpd_tls_received_header adds to the Received: header.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass, field

from postbus.tls_openssl import Native, SignatureParams


@dataclass
class TlsSession:
    protocol: str
    cipher: str
    usebits: int
    algbits: int
    params: SignatureParams = field(default_factory=SignatureParams)
    peer_present: bool = False
    peer_trusted: bool = False
    peer_cn: str = ""
    issuer_cn: str = ""
    fingerprint: str = ""  # of the certificate, smtpd_tls_fingerprint_digest
    pkey_fingerprint: str = ""  # of its public key (SubjectPublicKeyInfo)
    verify_code: int = 0  # OpenSSL's X509_V_ERR_*, 0 when trusted
    verify_text: str = ""
    issuer_oneline: str = ""  # X509_NAME_oneline() of the issuer

    @property
    def trust(self) -> str:
        if not self.peer_present:
            return "Anonymous"
        return "Trusted" if self.peer_trusted else "Untrusted"

    def summary(self, namaddr: str) -> str:
        """tls_log_summary() for a server."""
        return (f"{self.trust} TLS connection established from {namaddr}: {self.protocol} "
                f"with cipher {self.cipher} ({self.usebits}/{self.algbits} bits)"
                f"{self.params.text()}")

    def verify_error(self, namaddr: str) -> str:
        """Why the client certificate is not trusted (≈ tls_log_verify_error(), for the
        leaf certificate)."""
        code = self.verify_code
        if code == 18:  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            return f"certificate verification failed for {namaddr}: self-signed certificate"
        if code in (19, 20):  # SELF_SIGNED_CERT_IN_CHAIN, UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            return (f"certificate verification failed for {namaddr}: untrusted issuer "
                    f"{self.issuer_oneline or '<unknown>'}")
        if code in (9, 13):  # CERT_NOT_YET_VALID, ERROR_IN_CERT_NOT_BEFORE_FIELD
            return (f"client certificate verification failed for {namaddr}: certificate "
                    "not yet valid")
        if code in (10, 14):  # CERT_HAS_EXPIRED, ERROR_IN_CERT_NOT_AFTER_FIELD
            return (f"client certificate verification failed for {namaddr}: certificate has "
                    "expired")
        if code == 27:  # X509_V_ERR_CERT_UNTRUSTED
            return (f"certificate verification failed for {namaddr}: not trusted by local "
                    "or TLSA policy")
        return (f"client certificate verification failed for {namaddr}: "
                f"num={code}:{self.verify_text}")

    def received(self, ask_ccert: bool) -> list[str]:
        """The Received: header lines between ``from`` and ``by`` (≈ smtpd.c's
        common_pre_message_handling() with smtpd_tls_received_header)."""
        p = self.params
        lines: list[str] = []
        buf = f"\t(using {self.protocol} with cipher {self.cipher} " \
              f"({self.usebits}/{self.algbits} bits)"
        cont = False
        if p.kex_name:
            lines.append(buf)
            buf = f"\t key-exchange {p.kex_name}" + _detail(p.kex_curve, p.kex_bits)
            cont = True
        if p.srvr_name:
            sig = f"server-signature {p.srvr_name}" + _detail(p.srvr_curve, p.srvr_bits)
            if p.srvr_dgst:
                sig += f" server-digest {p.srvr_dgst}"
            if cont:
                buf += " " + sig
            else:
                lines.append(buf)
                buf = "\t " + sig
        if p.clnt_name:
            lines.append(buf)
            buf = f"\t client-signature {p.clnt_name}" + _detail(p.clnt_curve, p.clnt_bits)
            if p.clnt_dgst:
                buf += f" client-digest {p.clnt_dgst}"
        lines.append(buf + ")")
        if self.peer_present:
            verdict = "verified OK" if self.peer_trusted else "not verified"
            lines.append(f'\t(Client CN "{comment_sanitize(self.peer_cn)}", Issuer '
                         f'"{comment_sanitize(self.issuer_cn)}" ({verdict}))')
        elif ask_ccert:
            lines.append("\t(Client did not present a certificate)")
        else:
            lines.append("\t(No client certificate requested)")
        return lines


def _detail(curve: str, bits: int) -> str:
    return f" ({curve})" if curve else f" ({bits} bits)" if bits > 0 else ""


def comment_sanitize(text: str) -> str:
    """Printable ASCII, no backslash, balanced parentheses (smtpd.c's comment_sanitize())."""
    out: list[str] = []
    depth = 0
    for ch in text:
        if not (" " <= ch <= "~") or ch == "\\":
            ch = "?"
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth:
                depth -= 1
            else:
                ch = "?"
        out.append(ch)
    return "".join(out) + ")" * depth


def fingerprint(data: bytes, digest: str) -> str:
    """``AB:CD:...`` (tls_digest_encode())."""
    return ":".join(f"{b:02X}" for b in hashlib.new(digest, data).digest())


_ALG_BITS: dict[str, int] = {}  # cipher name -> SSL_CIPHER_get_bits()'s alg_bits


def session_facts(
    sslobj: ssl.SSLObject, native: Native, digest: str, ask_ccert: bool
) -> TlsSession:
    name, protocol, bits = sslobj.cipher() or ("", "", 0)
    if name not in _ALG_BITS:  # get_ciphers() costs 75 µs: once per cipher, not per session
        _ALG_BITS.update((str(c.get("name")), int(c.get("alg_bits", 0)))
                         for c in sslobj.context.get_ciphers())
    algbits = _ALG_BITS.get(name) or bits
    facts = TlsSession(protocol=sslobj.version() or protocol, cipher=name, usebits=bits,
                       algbits=algbits, params=native.signature_params(sslobj))
    der = sslobj.getpeercert(binary_form=True) if ask_ccert else None
    if der:
        facts.peer_present = True
        facts.verify_code, facts.verify_text = native.verify_result(sslobj)
        facts.peer_trusted = facts.verify_code == 0
        decoded = sslobj.getpeercert() or {}
        facts.peer_cn = _name_field(decoded.get("subject", ()), "commonName")
        issuer = decoded.get("issuer", ())
        facts.issuer_oneline = _oneline(issuer)
        facts.issuer_cn = (_name_field(issuer, "commonName")
                           or _name_field(issuer, "organizationName"))
        facts.fingerprint = fingerprint(der, digest)
        spki = subject_public_key_info(der)
        facts.pkey_fingerprint = fingerprint(spki, digest) if spki else ""
    return facts


def _name_field(name: object, key: str) -> str:
    """The one value of ``key`` in a decoded X.509 name ('' when absent or repeated,
    as tls_text_name() refuses a name with two)."""
    values = [v for rdn in name or () for k, v in rdn if k == key]  # type: ignore[attr-defined]
    return str(values[0]) if len(values) == 1 else ""


_SHORT = {"countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
          "organizationName": "O", "organizationalUnitName": "OU", "commonName": "CN",
          "emailAddress": "emailAddress"}


def _oneline(name: object) -> str:
    """``/C=DE/O=Example/CN=Example CA`` (X509_NAME_oneline())."""
    return "".join(f"/{_SHORT.get(k, k)}={v}" for rdn in name or ()  # type: ignore[attr-defined]
                   for k, v in rdn)


# -- a minimal DER walk: the SubjectPublicKeyInfo of a certificate --------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def subject_public_key_info(cert_der: bytes) -> bytes:
    """The DER of the certificate's SubjectPublicKeyInfo (what pkey_fingerprint digests):
    tbsCertificate's 6th element, or 7th after the explicit [0] version."""
    try:
        _, start, _ = _tlv(cert_der, 0)  # Certificate
        tag, pos, end = _tlv(cert_der, start)  # tbsCertificate
        if tag != 0x30:
            return b""
        index = 0
        if cert_der[pos] == 0xA0:  # [0] version
            pos = _tlv(cert_der, pos)[2]
        while pos < end:
            _, _, nxt = _tlv(cert_der, pos)
            if index == 5:  # serial, signature, issuer, validity, subject, SPKI
                return cert_der[pos:nxt]
            pos, index = nxt, index + 1
    except (ValueError, IndexError):
        pass
    return b""
