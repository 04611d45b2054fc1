"""Certificates made in the test with the ``cryptography`` package: a CA, server keys
(RSA and ECDSA) signed by it, client certificates (CA-signed and self-signed).

Files are PEM, written to a directory the test chooses; :class:`Pki` names them.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _name(cn: str, org: str = "Postbus Test") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_key(kind: str = "rsa") -> Key:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def issue(
    cn: str, key: Key, issuer_key: Key | None = None, issuer: x509.Certificate | None = None,
    *, ca: bool = False, client: bool = False, days: int = 30, dns: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.subject if issuer is not None else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    """One CA and the files of everything it signed, in ``root``."""

    root: Path
    ca_key: Key
    ca: x509.Certificate

    @classmethod
    def create(cls, root: Path) -> Pki:
        root.mkdir(parents=True, exist_ok=True)
        key = new_key("ec")
        ca = issue("Postbus Test CA", key, ca=True)
        pki = cls(root, key, ca)
        (root / "ca.pem").write_bytes(cert_pem(ca))
        return pki

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def server(
        self, name: str, kind: str = "rsa", cn: str = "mx.postbus.test"
    ) -> tuple[Path, Path]:
        """(cert file with the chain, key file) of a server certificate."""
        key = new_key(kind)
        cert = issue(cn, key, self.ca_key, self.ca, dns=(cn,))
        cert_file, key_file = self.root / f"{name}.crt", self.root / f"{name}.key"
        cert_file.write_bytes(cert_pem(cert) + cert_pem(self.ca))
        key_file.write_bytes(key_pem(key))
        return cert_file, key_file

    def client(self, name: str, cn: str, *, self_signed: bool = False) -> tuple[Path, Path]:
        key = new_key("ec")
        if self_signed:
            cert = issue(cn, key, client=True)
        else:
            cert = issue(cn, key, self.ca_key, self.ca, client=True)
        cert_file, key_file = self.root / f"{name}.crt", self.root / f"{name}.key"
        cert_file.write_bytes(cert_pem(cert))
        key_file.write_bytes(key_pem(key))
        return cert_file, key_file

    def client_context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """A client context that trusts our CA (and presents ``cert``)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = False
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx


def der_fingerprint(cert_file: Path, digest: str = "sha256") -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1(), "md5": hashes.MD5()}[digest]
    return ":".join(f"{b:02X}" for b in cert.fingerprint(algorithm))


def pkey_fingerprint(cert_file: Path, digest: str = "sha256") -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    h = hashes.Hash({"sha256": hashes.SHA256(), "sha1": hashes.SHA1(),
                     "md5": hashes.MD5()}[digest])
    h.update(spki)
    return ":".join(f"{b:02X}" for b in h.finalize())
