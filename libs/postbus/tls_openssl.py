"""What Python's ssl module does not expose of OpenSSL, through ctypes (≈ parts of tls_misc.c).

Python's ``ssl`` gives no verify callback, no verify depth, no key
exchange group and no signature details. Postfix needs three of them:

* ``smtpd_tls_ask_ccert``: a client certificate that does not verify must
  not fail the handshake (Postfix's verify callback records the error and
  goes on; the session is then "Untrusted" and fingerprints still work for
  ``permit_tls_clientcerts``). :func:`accept_unverified` installs such a
  callback; :func:`verify_result` reads the outcome afterwards.
* ``smtpd_tls_ccert_verifydepth`` (:func:`set_verify_depth`).
* the summary log line and Received header: ``key-exchange X25519
  server-signature RSA-PSS (2048 bits) server-digest SHA256`` for TLS 1.3
  (:func:`signature_params`, as tls_get_signature_params()).
* DANE-TA (delivery-smtp): the certificates the server sent above its own
  (:meth:`Native.peer_chain`); Python 3.11's ssl gives only the leaf.

Everything here works on the ``SSL_CTX *`` and ``SSL *`` inside CPython's
``_ssl`` objects, found at their fixed offsets and checked before use
(:func:`available`); where that check fails, or libssl is not the one
``_ssl`` uses, every function degrades to what Python's ssl can do alone
and says so once in the log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import ssl
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

log = logging.getLogger("postbus.tls")

_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_SSL_VERIFY_PEER = 0x01
_SSL_CTRL_GET_PEER_SIGNATURE_NID = 108
_SSL_CTRL_GET_PEER_TMP_KEY = 109
_SSL_CTRL_GET_SIGNATURE_NID = 132
_TLS1_3_VERSION = 0x0304
_EVP_PKEY_RSA = 6
_EVP_PKEY_DH = 28
_EVP_PKEY_EC = 408
_NID_UNDEF = 0
_X509_V_OK = 0


@cache
def _libssl() -> ctypes.CDLL | None:
    """The libssl that ``_ssl`` is linked with (same soname: the same loaded copy)."""
    name = "libssl.so.3" if ssl.OPENSSL_VERSION_INFO[0] >= 3 else ctypes.util.find_library("ssl")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    c, p, i = ctypes.c_int, ctypes.c_void_p, ctypes.c_long
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "SSL_CTX_get_verify_mode": (c, [p]),
        "SSL_CTX_set_verify": (None, [p, c, _VERIFY_CB]),
        "SSL_CTX_set_verify_depth": (None, [p, c]),
        "SSL_get_SSL_CTX": (p, [p]),
        "SSL_get_verify_result": (i, [p]),
        "SSL_version": (c, [p]),
        "SSL_ctrl": (i, [p, c, i, p]),
        "SSL_get_certificate": (p, [p]),
        "SSL_get0_peer_certificate": (p, [p]),
        "X509_get0_pubkey": (p, [p]),
        "EVP_PKEY_get_id": (c, [p]),
        "EVP_PKEY_type": (c, [c]),
        "EVP_PKEY_get_bits": (c, [p]),
        "EVP_PKEY_free": (None, [p]),
        "EVP_PKEY_get_group_name": (c, [p, ctypes.c_char_p, ctypes.c_size_t,
                                        ctypes.POINTER(ctypes.c_size_t)]),
        "OBJ_nid2sn": (ctypes.c_char_p, [c]),
        "X509_verify_cert_error_string": (ctypes.c_char_p, [i]),
        "SSL_get_peer_cert_chain": (p, [p]),
        "OPENSSL_sk_num": (c, [p]),
        "OPENSSL_sk_value": (p, [p, c]),
        "i2d_X509": (c, [p, ctypes.POINTER(ctypes.c_char_p)]),
    }
    try:
        for fn, (restype, argtypes) in sigs.items():
            func = getattr(lib, fn)
            func.restype, func.argtypes = restype, argtypes
    except AttributeError:
        return None  # OpenSSL 1.1: none of this (Postbus needs OpenSSL 3)
    return lib


def _ctx_pointer(context: ssl.SSLContext) -> int | None:
    """``SSL_CTX *`` of a PySSLContext: the first field after the object header."""
    lib = _libssl()
    if lib is None:
        return None
    ptr = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not ptr:
        return None
    # check: OpenSSL's verify mode is the one Python set
    want = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[context.verify_mode]
    return ptr if lib.SSL_CTX_get_verify_mode(ptr) == want else None


def _ssl_pointer(sslobj: ssl.SSLObject, ctx_ptr: int) -> int | None:
    """``SSL *`` of an SSLObject: its ``_ssl._SSLSocket`` holds it after the socket weakref."""
    lib = _libssl()
    inner = getattr(sslobj, "_sslobj", None)
    if lib is None or inner is None:
        return None
    ptr = ctypes.c_void_p.from_address(
        id(inner) + object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)).value
    if not ptr or lib.SSL_get_SSL_CTX(ptr) != ctx_ptr:
        return None
    return ptr


@_VERIFY_CB
def _keep_going(preverify_ok: int, store: int) -> int:
    """Postfix's server verify callback in effect: record (OpenSSL does), never abort."""
    return 1


@cache
def _warn_once(what: str) -> None:
    log.warning("%s: Python's ssl module alone is used (%s)", what, sys.version.split()[0])


@dataclass
class Native:
    """The OpenSSL handles of one SSLContext, found once (None: not available)."""

    ctx: int | None

    @classmethod
    def of(cls, context: ssl.SSLContext) -> Native:
        return cls(_ctx_pointer(context))

    def accept_unverified(self) -> bool:
        """Ask for client certificates without failing on one that does not verify."""
        lib = _libssl()
        if lib is None or self.ctx is None:
            _warn_once("cannot accept untrusted client certificates; they fail the handshake")
            return False
        lib.SSL_CTX_set_verify(self.ctx, _SSL_VERIFY_PEER, _keep_going)
        return True

    def set_verify_depth(self, depth: int) -> None:
        lib = _libssl()
        if lib is not None and self.ctx is not None:
            lib.SSL_CTX_set_verify_depth(self.ctx, depth)

    def verify_result(self, sslobj: ssl.SSLObject) -> tuple[int, str]:
        """OpenSSL's verification result of the peer's chain (0: X509_V_OK) and its text."""
        lib = _libssl()
        ptr = _ssl_pointer(sslobj, self.ctx) if lib is not None and self.ctx else None
        if lib is None or ptr is None:
            return 0, ""  # Python's ssl verified it, or the handshake would have failed
        code = int(lib.SSL_get_verify_result(ptr))
        text = lib.X509_verify_cert_error_string(code) if code != _X509_V_OK else b""
        return code, (text or b"").decode("ascii", "replace")

    def peer_chain(self, sslobj: ssl.SSLObject) -> list[bytes]:
        """The DER certificates the server sent, its own first (empty when out of reach)."""
        lib = _libssl()
        ptr = _ssl_pointer(sslobj, self.ctx) if lib is not None and self.ctx else None
        if lib is None or ptr is None:
            return []
        stack = lib.SSL_get_peer_cert_chain(ptr)
        if not stack:
            return []
        out: list[bytes] = []
        for index in range(lib.OPENSSL_sk_num(stack)):
            cert = lib.OPENSSL_sk_value(stack, index)
            size = lib.i2d_X509(cert, None) if cert else 0
            if size <= 0:
                return []
            buf = ctypes.create_string_buffer(size)
            cursor = ctypes.c_char_p(ctypes.addressof(buf))
            if lib.i2d_X509(cert, ctypes.byref(cursor)) != size:
                return []
            out.append(buf.raw)
        return out

    def signature_params(self, sslobj: ssl.SSLObject) -> SignatureParams:
        """Key exchange and signatures of a TLS 1.3 session (≈ tls_get_signature_params())."""
        lib = _libssl()
        out = SignatureParams()
        ptr = _ssl_pointer(sslobj, self.ctx) if lib is not None and self.ctx else None
        if lib is None or ptr is None or lib.SSL_version(ptr) < _TLS1_3_VERSION:
            return out
        dh = ctypes.c_void_p()
        if lib.SSL_ctrl(ptr, _SSL_CTRL_GET_PEER_TMP_KEY, 0, ctypes.byref(dh)) and dh.value:
            nid = lib.EVP_PKEY_get_id(dh.value)
            if nid == _EVP_PKEY_DH:
                out.kex_name, out.kex_bits = "DHE", lib.EVP_PKEY_get_bits(dh.value)
            elif nid == _EVP_PKEY_EC:
                out.kex_name, out.kex_curve = "ECDHE", _curve(lib, dh.value)
            else:
                out.kex_name = _sn(lib, lib.EVP_PKEY_type(nid))
            lib.EVP_PKEY_free(dh.value)
        nid = ctypes.c_int()
        cert = lib.SSL_get_certificate(ptr)
        if cert:
            out.srvr_name, out.srvr_curve, out.srvr_bits = _sig_key(lib, cert)
            if lib.SSL_ctrl(ptr, _SSL_CTRL_GET_SIGNATURE_NID, 0, ctypes.byref(nid)) and nid.value:
                out.srvr_dgst = _sn(lib, nid.value)
        peer = lib.SSL_get0_peer_certificate(ptr)
        if peer:
            out.clnt_name, out.clnt_curve, out.clnt_bits = _sig_key(lib, peer)
            nid.value = 0
            if lib.SSL_ctrl(ptr, _SSL_CTRL_GET_PEER_SIGNATURE_NID, 0,
                            ctypes.byref(nid)) and nid.value:
                out.clnt_dgst = _sn(lib, nid.value)
        return out


@dataclass
class SignatureParams:
    """tls_get_signature_params()'s findings; empty strings where there are none."""

    kex_name: str = ""
    kex_curve: str = ""
    kex_bits: int = 0
    srvr_name: str = ""
    srvr_curve: str = ""
    srvr_bits: int = 0
    srvr_dgst: str = ""
    clnt_name: str = ""
    clnt_curve: str = ""
    clnt_bits: int = 0
    clnt_dgst: str = ""

    def text(self) -> str:
        """`` key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256``
        (with a leading space; empty when there is nothing), as tls_log_summary()."""
        out = ""
        if self.kex_name:
            out += f" key-exchange {self.kex_name}" + _detail(self.kex_curve, self.kex_bits)
        if self.srvr_name:
            out += f" server-signature {self.srvr_name}" + _detail(self.srvr_curve,
                                                                   self.srvr_bits)
            if self.srvr_dgst:
                out += f" server-digest {self.srvr_dgst}"
        if self.clnt_name:
            out += f" client-signature {self.clnt_name}" + _detail(self.clnt_curve,
                                                                   self.clnt_bits)
            if self.clnt_dgst:
                out += f" client-digest {self.clnt_dgst}"
        return out


def _detail(curve: str, bits: int) -> str:
    return f" ({curve})" if curve else f" ({bits} bits)" if bits > 0 else ""


def _sn(lib: ctypes.CDLL, nid: int) -> str:
    name = lib.OBJ_nid2sn(nid) if nid != _NID_UNDEF else None
    return name.decode("ascii", "replace") if name else ""


def _curve(lib: ctypes.CDLL, pkey: int) -> str:
    buf = ctypes.create_string_buffer(80)
    if lib.EVP_PKEY_get_group_name(pkey, buf, len(buf), None):
        return buf.value.decode("ascii", "replace")
    return ""


def _sig_key(lib: ctypes.CDLL, cert: int) -> tuple[str, str, int]:
    """(signature name, curve, bits) of a certificate's key, Postfix's way: RSA keys
    sign with RSA-PSS in TLS 1.3, EC keys are "ECDSA"."""
    pkey = lib.X509_get0_pubkey(cert)
    if not pkey:
        return "", "", 0
    nid = lib.EVP_PKEY_type(lib.EVP_PKEY_get_id(pkey))
    if nid == _EVP_PKEY_RSA:
        return "RSA-PSS", "", lib.EVP_PKEY_get_bits(pkey)
    if nid == _EVP_PKEY_EC:
        return "ECDSA", _curve(lib, pkey), 0
    return _sn(lib, nid), "", 0
