"""Server TLS as Postfix configures it: smtpd_tls_* into an ssl.SSLContext (≈ tls_server.c).

:class:`ServerTlsSettings` reads the parameters once (level, keys and
certificates, protocols, cipher grade, client certificates, logging);
:class:`ServerTls` holds the SSLContext built from them and builds it again
when a certificate or key file changes on disk (cert-manager renews the
Secret of a Kubernetes pod by swapping the files under the mount): a
handshake after the change uses the new files, sessions already running
keep theirs. A failed load is Postfix's "disabling TLS support": warnings,
then ``454 4.7.0 TLS not available due to local problem`` to STARTTLS, until
the files are good again.

Keys and certificates come from smtpd_tls_chain_files (each file a key then
its chain, or a key file then a chain file, for any number of algorithms),
else from smtpd_tls_cert_file/key_file (RSA) and smtpd_tls_eccert_file/
eckey_file (ECDSA); OpenSSL keeps one of each algorithm and picks per client.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import ssl
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.tls_openssl import Native

log = logging.getLogger("postbus.tls")

RELOAD_CHECK = 1.0  # seconds between looks at the files' metadata
LEVELS = ("none", "may", "encrypt")
_VERSIONS = {  # Postfix's protocol names, in order
    "SSLv2": None, "SSLv3": ssl.TLSVersion.SSLv3, "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = list(_VERSIONS)
_CIPHERLISTS = {  # smtpd_tls_ciphers grade -> the parameter with its OpenSSL cipher list
    "high": "tls_high_cipherlist", "medium": "tls_medium_cipherlist",
    "low": "tls_low_cipherlist", "export": "tls_export_cipherlist",
    "null": "tls_null_cipherlist",
}
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.S)
#: smtpd_tls_loglevel from which the summary line is logged (0: only errors)
LOG_SUMMARY = 1


class TlsConfigError(Exception):
    """A TLS setting or file that cannot be used: TLS is off until it is fixed."""


@dataclass(frozen=True)
class ServerTlsSettings:
    """The TLS parameters of one SMTP server process (prefix ``smtpd``)."""

    use_tls: bool  # STARTTLS offered (may or encrypt)
    enforce: bool  # encrypt: everything but EHLO/HELO/NOOP/QUIT/STARTTLS needs TLS first
    wrappermode: bool
    chain_files: tuple[str, ...]
    keypairs: tuple[tuple[str, str, str], ...]  # (algorithm, cert file, key file)
    ca_file: str
    ca_path: str
    ask_ccert: bool  # ask for a client certificate (ask_ccert, or req_ccert with encrypt)
    req_ccert: bool  # ... and require a trusted one
    verify_depth: int
    loglevel: int
    received_header: bool
    protocols: str
    cipherlist: str
    fingerprint_digest: str
    handshake_timeout: float
    preempt: bool

    @classmethod
    def from_config(cls, cfg: Config) -> ServerTlsSettings:
        """As smtpd's pre_jail_init(): the level (or the obsolete use_tls/enforce_tls
        booleans), wrapper mode implying encrypt, the grade and protocols of that level."""
        wrapper = cfg.bool("smtpd_tls_wrappermode")
        use, enforce = cfg.bool("smtpd_use_tls"), cfg.bool("smtpd_enforce_tls")
        level = cfg.get("smtpd_tls_security_level").strip().lower()
        if level and not wrapper:
            if level not in LEVELS:
                raise ConfigError(f'Invalid TLS level "{level}"',
                                  parameter="smtpd_tls_security_level")
            use, enforce = level != "none", level == "encrypt"
        enforce = enforce or wrapper
        use = use or enforce
        grade_param = "smtpd_tls_mandatory_ciphers" if enforce else "smtpd_tls_ciphers"
        grade = cfg.get(grade_param).strip().lower()
        if grade not in _CIPHERLISTS:
            raise ConfigError(f'invalid cipher grade: "{grade}"', parameter=grade_param)
        exclusions = cfg.get("smtpd_tls_exclude_ciphers").split()
        if enforce:
            exclusions += cfg.get("smtpd_tls_mandatory_exclude_ciphers").split()
        req = enforce and cfg.bool("smtpd_tls_req_ccert")
        ask = cfg.bool("smtpd_tls_ask_ccert") or req
        if ask:
            exclusions.append("aNULL")
        cipherlist = cfg.get(_CIPHERLISTS[grade])
        for word in (w for item in exclusions for w in re.split(r"[,:\s]+", item) if w):
            if word[0] in "!+-@":
                raise ConfigError(f"invalid unary '!+-@' in cipher exclusion: {word}",
                                  parameter="smtpd_tls_exclude_ciphers")
            cipherlist += f":!{word}"
        digest = cfg.get("smtpd_tls_fingerprint_digest").strip().lower()
        if digest not in hashlib.algorithms_available:
            raise ConfigError(f"unsupported message digest: {digest}",
                              parameter="smtpd_tls_fingerprint_digest")
        cert = cfg.get("smtpd_tls_cert_file").strip()
        if cert.lower() == "none":
            raise ConfigError("anonymous TLS (no server certificate) is not supported yet "
                              "by Postbus", parameter="smtpd_tls_cert_file")
        keypairs = tuple(
            (alg, c, k or c) for alg, c, k in (
                ("RSA", cert, cfg.get("smtpd_tls_key_file").strip()),
                ("ECDSA", cfg.get("smtpd_tls_eccert_file").strip(),
                 cfg.get("smtpd_tls_eckey_file").strip()),
            ) if c
        )
        return cls(
            use_tls=use, enforce=enforce, wrappermode=wrapper,
            chain_files=tuple(cfg.list("smtpd_tls_chain_files")), keypairs=keypairs,
            ca_file=cfg.get("smtpd_tls_CAfile").strip(),
            ca_path=cfg.get("smtpd_tls_CApath").strip(),
            ask_ccert=ask, req_ccert=req,
            verify_depth=cfg.int("smtpd_tls_ccert_verifydepth"),
            loglevel=cfg.int("smtpd_tls_loglevel"),
            received_header=cfg.bool("smtpd_tls_received_header"),
            protocols=cfg.get("smtpd_tls_mandatory_protocols" if enforce
                              else "smtpd_tls_protocols"),
            cipherlist=cipherlist, fingerprint_digest=digest,
            handshake_timeout=cfg.time("smtpd_starttls_timeout"),
            preempt=cfg.bool("tls_preempt_cipherlist"),
        )

    def files(self) -> list[str]:
        """Every file the context is built from, for noticing a change."""
        if self.chain_files:
            files = list(self.chain_files)
        else:
            files = [f for _, cert, key in self.keypairs for f in (cert, key)]
        return [*files, *([self.ca_file] if self.ca_file else [])]


def protocol_range(plist: str) -> tuple[ssl.TLSVersion, ssl.TLSVersion, set[str]]:
    """(lowest, highest, excluded names within) for a Postfix protocol list
    (``>=TLSv1.2``, ``!SSLv2, !SSLv3``, ``TLSv1.2 TLSv1.3``) (≈ tls_proto_mask_lims())."""
    include: set[str] = set()
    exclude: set[str] = set()
    floor = ceiling = ""
    for tok in (t for t in re.split(r"[,:\s]+", plist) if t):
        if tok.startswith((">=", "<=")):
            name = tok[2:]
            if name not in _VERSIONS:
                raise TlsConfigError(f'Invalid TLS protocol list "{plist}"')
            floor, ceiling = (name, ceiling) if tok[0] == ">" else (floor, name)
        elif tok.lstrip("!") in _VERSIONS:
            (exclude if tok.startswith("!") else include).add(tok.lstrip("!"))
        else:
            raise TlsConfigError(f'Invalid TLS protocol list "{plist}"')
    allowed = [n for n in _ORDER if _VERSIONS[n] is not None and n not in exclude
               and (not include or n in include)
               and (not floor or _ORDER.index(n) >= _ORDER.index(floor))
               and (not ceiling or _ORDER.index(n) <= _ORDER.index(ceiling))]
    if not allowed:
        raise TlsConfigError(f'Invalid TLS protocol list "{plist}"')
    low, high = allowed[0], allowed[-1]
    holes = {n for n in _ORDER[_ORDER.index(low):_ORDER.index(high)] if n not in allowed}
    lo, hi = _VERSIONS[low], _VERSIONS[high]
    assert lo is not None and hi is not None
    return lo, hi, holes


_NO_FLAGS = {"TLSv1": "OP_NO_TLSv1", "TLSv1.1": "OP_NO_TLSv1_1", "TLSv1.2": "OP_NO_TLSv1_2"}


def build_context(settings: ServerTlsSettings) -> tuple[ssl.SSLContext, Native]:
    """A server SSLContext for ``settings``; TlsConfigError says what is wrong,
    in Postfix's words."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    low, high, holes = protocol_range(settings.protocols)
    with warnings.catch_warnings():  # TLSv1 and TLSv1.1 are deprecated, not our choice
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = low, high
        for name in holes:
            ctx.options |= getattr(ssl, _NO_FLAGS[name])
    try:
        ctx.set_ciphers(settings.cipherlist)
    except ssl.SSLError as exc:
        raise TlsConfigError(f'error setting cipher grade: "{settings.cipherlist}": {exc}')\
            from exc
    if settings.preempt:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if settings.chain_files:
        for label, pem in _chain_groups(settings.chain_files):
            _load_pem(ctx, label, pem)
    else:
        for alg, cert, key in settings.keypairs:
            _load_pair(ctx, alg, cert, key)
    if settings.ask_ccert:
        if settings.ca_file or settings.ca_path:
            try:
                ctx.load_verify_locations(settings.ca_file or None, settings.ca_path or None)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(
                    f"cannot load Certification Authority data, CAfile=\"{settings.ca_file}\""
                    f", CApath=\"{settings.ca_path}\": disabling TLS support ({exc})") from exc
        ctx.verify_mode = ssl.CERT_OPTIONAL
    native = Native.of(ctx)
    if settings.ask_ccert:
        native.accept_unverified()
        native.set_verify_depth(settings.verify_depth)
    return ctx, native


def _load_pair(ctx: ssl.SSLContext, alg: str, cert: str, key: str) -> None:
    """One key type from smtpd_tls_cert_file/key_file (or the ECDSA pair), with
    tls_certkey.c's warnings."""
    for path, what in ((cert, "certificate"), (key, "private key")):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsConfigError(f'cannot get {alg} {what} from file "{path}": '
                                 f"disabling TLS support ({exc.strerror})") from exc
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TlsConfigError(f"{alg} private key in {key} does not match public key in "
                                 f"{cert}: disabling TLS support") from exc
        which = f'file "{cert}"' if key == cert else f'files "{cert}" and "{key}"'
        raise TlsConfigError(f"cannot get {alg} certificate and private key from {which}: "
                             f"disabling TLS support ({exc.reason or exc})") from exc


def _chain_groups(files: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """smtpd_tls_chain_files as (source, PEM of one key and its chain): a key starts a
    group, the certificates after it (in that file or the next) belong to it."""
    group: list[bytes] = []
    source = ""
    for path in files:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise TlsConfigError(f"error opening chain file: {path}: {exc.strerror}") from exc
        blocks = list(_PEM.finditer(data))
        if not blocks:
            raise TlsConfigError(f"No PEM data in {path}")
        for block in blocks:
            if block.group(1).endswith(b"PRIVATE KEY"):
                if group:
                    yield source, b"".join(group)
                group, source = [block.group(0)], path
            elif block.group(1) == b"CERTIFICATE":
                if not group:
                    raise TlsConfigError(f"error loading chain from {path}: key not first")
                group.append(block.group(0))
    if group:
        yield source, b"".join(group)


def _load_pem(ctx: ssl.SSLContext, source: str, pem: bytes) -> None:
    """Load one key and its chain from memory (OpenSSL reads them from a file: an
    anonymous memory file, never on disk)."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise TlsConfigError(f"No certs for key at index 1 in {source}")
    with _memory_file(pem) as path:
        try:
            ctx.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise TlsConfigError(f"error loading private keys and certificates from: {source}"
                                 f": {exc.reason or exc}") from exc


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("postbus-tls", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as tmp:  # pragma: no cover - not Linux
        tmp.write(data)
        tmp.flush()
        yield tmp.name


def _signature(paths: list[str]) -> tuple[object, ...]:
    out: list[object] = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class ServerTls:
    """The current SSLContext of one server, rebuilt when its files change."""

    def __init__(self, settings: ServerTlsSettings) -> None:
        self.settings = settings
        self.ctx: ssl.SSLContext | None = None
        self.native = Native(None)
        self._files = settings.files()
        self._seen: tuple[object, ...] = ()
        self._checked = 0.0
        if settings.use_tls:
            self._check_start()
            self._load(first=True)

    def _check_start(self) -> None:
        s = self.settings
        if s.chain_files and s.keypairs:
            log.warning("Both smtpd_tls_chain_files and one or more of the legacy "
                        " smtpd_tls_cert_file, smtpd_tls_eccert_file or smtpd_tls_dcert_file "
                        "are non-empty; the legacy  parameters will be ignored")
        if not s.chain_files and not s.keypairs and s.ask_ccert:
            log.warning("Need a server cert to request client certs")

    def _load(self, first: bool = False) -> None:
        self._seen = _signature(self._files)
        self._checked = time.monotonic()
        if not self._files or not (self.settings.chain_files or self.settings.keypairs):
            if first:
                log.warning("No server certs available. TLS won't be enabled")
            return
        try:
            self.ctx, self.native = build_context(self.settings)
        except TlsConfigError as exc:
            log.warning("%s", exc)
            if not first and self.ctx is not None:
                log.warning("keeping the TLS keys and certificates loaded before")
            return
        if not first:
            log.info("reloaded TLS keys and certificates from %s", ", ".join(self._files))

    def context(self) -> ssl.SSLContext | None:
        """The context for a new handshake (None: TLS not available now)."""
        if self.settings.use_tls and time.monotonic() - self._checked >= RELOAD_CHECK:
            self._checked = time.monotonic()
            if _signature(self._files) != self._seen:
                self._load()
        return self.ctx
