"""The client side of a TLS session: its context per policy, and what the handshake proved
(≈ tls_client.c, tls_verify.c, the TLS part of smtp_proto.c).

A context is made once per policy (protocols, cipher grade and exclusions,
smtp_tls_CAfile / smtp_tls_CApath, and the client certificate of
smtp_tls_cert_file / smtp_tls_key_file, shown to servers that ask). The handshake never fails on a
certificate: as Postfix's verify callback does, OpenSSL is told to carry on
and the result is read afterwards. A session is then:

* ``Verified`` (verify, secure): the chain is trusted and a certificate
  name (DNS subjectAltNames, else the CN) matches a ``match`` pattern:
  ``hostname`` (the server's name), ``nexthop``, ``dot-nexthop``, a name,
  or ``.domain`` for its subdomains; a ``*.`` wildcard covers one label;
* ``Trusted``: the chain is trusted (no names to match below verify);
* ``Untrusted``: it is not, or no name matched (OpenSSL's hostname check
  is part of its chain verification, as in Postfix);
* ``Anonymous``: the server sent no certificate.

At verify and secure an unmatched session is logged (``server certificate
verification failed for ...``) and the destination deferred with ``4.7.5
Server certificate not verified``; smtp_tls_loglevel 1 logs the summary
``Verified TLS connection established to host[addr]:port: TLSv1.3 with
cipher ...`` for every session.

A DANE policy (``tlsa``) replaces the WebPKI checks by the TLSA match of
:mod:`delivery_smtp.dane_match`: ``Verified`` when it matched (``Trusted``
under an insecure MX RRset, Postfix's half-dane), else the OpenSSL error
is logged (``num=65:No matching DANE TLSA records``) and the destination
deferred as above.
"""

from __future__ import annotations

import logging
import re
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from delivery_smtp import dane_match
from delivery_smtp.tls_policy import TlsPolicy
from postbus.config.loader import Config
from postbus.delivery import Outcome
from postbus.tls import TlsConfigError, protocol_range
from postbus.tls_openssl import Native, SignatureParams
from postbus.tls_session import session_facts

log = logging.getLogger("postbus.delivery")

NOT_VERIFIED = Outcome("deferred", "4.7.5", "Server certificate not verified")
_NO_FLAGS = {"TLSv1": "OP_NO_TLSv1", "TLSv1.1": "OP_NO_TLSv1_1", "TLSv1.2": "OP_NO_TLSv1_2"}
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH


@dataclass(frozen=True)
class Peer:
    """Who the session is with: for the log and the ``hostname``/``nexthop`` patterns."""

    namaddrport: str
    host: str
    nexthop: str


class ClientTls:
    """Contexts and checks for one transport's TLS sessions."""

    def __init__(self, cfg: Config, lmtp: bool = False) -> None:
        self.cafile = cfg.get("smtp_tls_CAfile").strip()
        self.capath = cfg.get("smtp_tls_CApath").strip()
        self.cert_file = cfg.get("smtp_tls_cert_file").strip()
        self.key_file = cfg.get("smtp_tls_key_file").strip() or self.cert_file
        self.loglevel = cfg.int("lmtp_tls_loglevel" if lmtp else "smtp_tls_loglevel")
        self.cipherlists = {grade: cfg.get(f"tls_{grade}_cipherlist")
                            for grade in ("high", "medium", "low", "export", "null")}
        self._contexts: dict[tuple[str, str, str, bool], tuple[ssl.SSLContext, Native]] = {}

    def context(self, policy: TlsPolicy) -> tuple[ssl.SSLContext, Native]:
        """The context for ``policy``; TlsConfigError in Postfix's words when it cannot be."""
        key = (policy.protocols, policy.grade, policy.exclude, bool(policy.sts))
        made = self._contexts.get(key)
        if made is None:
            made = self._contexts[key] = self._build(policy)
        return made

    def _build(self, policy: TlsPolicy) -> tuple[ssl.SSLContext, Native]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        low, high, holes = protocol_range(policy.protocols)
        with warnings.catch_warnings():  # TLSv1 and TLSv1.1 are deprecated, not our choice
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version, ctx.maximum_version = low, high
            for name in holes:
                if name in _NO_FLAGS:
                    ctx.options |= getattr(ssl, _NO_FLAGS[name])
        if policy.grade not in self.cipherlists:
            raise TlsConfigError(f'invalid cipher grade: "{policy.grade}"')
        ciphers = self.cipherlists[policy.grade] + "".join(
            f":!{w}" for w in re.split(r"[,:\s]+", policy.exclude) if w)
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise TlsConfigError(f'error setting cipher grade: "{ciphers}"') from exc
        if self.cafile or self.capath:
            try:
                ctx.load_verify_locations(self.cafile or None, self.capath or None)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(
                    f'cannot load Certification Authority data, CAfile="{self.cafile}", '
                    f'CApath="{self.capath}": disabling TLS support') from exc
        elif policy.sts:  # MTA-STS means WebPKI: the system store when main.cf names none
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(
                    f"cannot load certificate and key from {self.cert_file} and "
                    f"{self.key_file}: disabling TLS support") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
        native = Native.of(ctx)
        if not native.accept_unverified():  # no libssl here: nothing can be verified
            ctx.verify_mode = ssl.CERT_NONE
        return ctx, native

    def check(self, sslobj: ssl.SSLObject, native: Native, policy: TlsPolicy,
              peer: Peer, verdict: list[str] | None = None) -> Outcome | None:
        """Log what the handshake proved; the outcome that ends the session, if any.

        ``verdict`` (MTA-STS) gets the RFC 8460 result type of the session ("" when
        the certificate is trusted and names the MX host), whatever the level."""
        facts = session_facts(sslobj, native, "sha256", ask_ccert=True)
        if sslobj.context.verify_mode == ssl.CERT_NONE:  # no libssl: nothing was verified
            facts.peer_trusted = False
        matched = False
        code, text = facts.verify_code, facts.verify_text
        purpose = "server"
        if policy.tlsa and facts.peer_present:  # DANE: the TLSA records, not the CAs
            chain = native.peer_chain(sslobj) or [sslobj.getpeercert(binary_form=True) or b""]
            dane = dane_match.verify(policy.tlsa, chain, [peer.host])
            facts.peer_trusted = matched = dane.ok
            code, text = dane.code, dane.text
            purpose = "CA" if dane.depth > 0 and not dane.ok else purpose
        elif facts.peer_present and facts.peer_trusted and policy.must_match:
            names = certificate_names(sslobj.getpeercert() or {})
            matched = any(name_matches(name, pattern, peer) for name in names
                          for pattern in policy.match)
            if not matched:
                code, text = _HOSTNAME_MISMATCH, "hostname mismatch"
        trusted = facts.peer_present and facts.peer_trusted and (matched or not policy.must_match)
        if verdict is not None:
            verdict.append(_sts_result(facts.peer_present, facts.peer_trusted, code,
                                       sslobj.getpeercert() or {}, peer))
        if policy.must_match and not matched:
            log.info("%s", _verify_error(code, text, facts.issuer_oneline, peer.namaddrport,
                                         facts.peer_present, purpose))
        if self.loglevel >= 1:
            trust = ("Anonymous" if not facts.peer_present
                     else "Verified" if matched and policy.level != "half-dane"
                     else "Trusted" if trusted else "Untrusted")
            log.info("%s TLS connection established to %s: %s with cipher %s (%d/%d bits)%s",
                     trust, peer.namaddrport, facts.protocol, facts.cipher, facts.usebits,
                     facts.algbits, _as_client(facts.params).text())
        return NOT_VERIFIED if policy.must_match and not matched else None


def _sts_result(present: bool, trusted: bool, code: int, decoded: Mapping[str, Any],
                peer: Peer) -> str:
    """The RFC 8460 result type of a session under MTA-STS ("" for a valid one)."""
    if not present:
        return "certificate-not-trusted"
    if code in (10, 14):
        return "certificate-expired"
    if not trusted and code != _HOSTNAME_MISMATCH:
        return "certificate-not-trusted"
    names = certificate_names(decoded)
    if not any(name_matches(name, "hostname", peer) for name in names):
        return "certificate-host-mismatch"
    return "" if trusted else "validation-failure"


def _as_client(params: SignatureParams) -> SignatureParams:
    """Native.signature_params() names our own key "server" and the peer's "client";
    on this side the peer is the server."""
    p = params
    return replace(p, srvr_name=p.clnt_name, srvr_curve=p.clnt_curve, srvr_bits=p.clnt_bits,
                   srvr_dgst=p.clnt_dgst, clnt_name=p.srvr_name, clnt_curve=p.srvr_curve,
                   clnt_bits=p.srvr_bits, clnt_dgst=p.srvr_dgst)


def _verify_error(code: int, text: str, issuer: str, namaddr: str, present: bool,
                  purpose: str = "server") -> str:
    """tls_log_verify_error() for a server certificate (``purpose`` "CA" when the error
    is above the leaf, as Postfix's PURPOSE)."""
    if not present:
        return f"server certificate verification failed for {namaddr}: num=50:" \
               "application verification failure"
    if code == 18:
        return f"certificate verification failed for {namaddr}: self-signed certificate"
    if code in (19, 20):
        return (f"certificate verification failed for {namaddr}: untrusted issuer "
                f"{issuer or '<unknown>'}")
    if code in (9, 13):
        return (f"{purpose} certificate verification failed for {namaddr}: certificate not "
                "yet valid")
    if code in (10, 14):
        return f"{purpose} certificate verification failed for {namaddr}: certificate has expired"
    return f"{purpose} certificate verification failed for {namaddr}: num={code}:{text}"


def certificate_names(decoded: Mapping[str, Any]) -> list[str]:
    """The DNS subjectAltNames, or the subject CN when there are none (RFC 6125)."""
    dns = [str(v) for k, v in decoded.get("subjectAltName") or () if k == "DNS"]
    if dns:
        return dns
    for rdn in decoded.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                return [str(value)]
    return []


def name_matches(name: str, pattern: str, peer: Peer) -> bool:
    """Does certificate name ``name`` satisfy a ``match`` pattern (≈ OpenSSL's X509_check_host()
    with the names Postfix's tls_client.c adds)?"""
    subdomain = False
    low = pattern.lower()
    if low == "hostname":
        want = peer.host
    elif low == "nexthop":
        want = peer.nexthop
    elif low == "dot-nexthop":
        want, subdomain = peer.nexthop, True
    elif pattern.startswith("."):
        want, subdomain = pattern[1:], True
    else:
        want = pattern
    name, want = name.lower().rstrip("."), want.lower().rstrip(".")
    if not want:
        return False
    if subdomain:  # any proper subdomain; a wildcard name stands for one of them
        return name.endswith("." + want) and name.count(".") > want.count(".")
    return dane_match.name_matches(name, want)
