"""DKIM signing by sender domain (≈ OpenDKIM's SigningTable and KeyTable, with dkimpy).

postbus_dkim_signing_table maps the author (From: header address, else the
envelope sender) to a key name; the keys tried, in order, are the address
``user@domain``, then ``domain``, then each parent domain as ``.parent``.
postbus_dkim_key_table maps that key name to ``domain:selector:keyfile``
(OpenDKIM's KeyTable line); without a key table the signing table's value
is that triple itself. No entry: the message is not signed.

A table that cannot answer now (TableRetry), or a key file that cannot be
read or parsed, is a :class:`SignError`: the agent defers the message
rather than send it unsigned (never silently).
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from dataclasses import dataclass

import dkim

from content_filter import rsa_fast
from postbus import metrics
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry

log = logging.getLogger("postbus.content-filter")

CANONICALIZATIONS = ("simple", "relaxed")
rsa_fast.install()


class SignError(Exception):
    """The message should be signed but cannot be now (the agent defers it)."""


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    keyfile: str


def canonicalization(cfg: Config) -> tuple[bytes, bytes]:
    """postbus_dkim_canonicalization: ``header[/body]``, body ``simple`` by default."""
    value = cfg.get("postbus_dkim_canonicalization").strip().lower()
    header, _, body = value.partition("/")
    body = body or "simple"
    if header not in CANONICALIZATIONS or body not in CANONICALIZATIONS:
        raise ConfigError(f"{value!r} is not a DKIM canonicalization (simple or relaxed, "
                          "header/body)", parameter="postbus_dkim_canonicalization")
    return header.encode(), body.encode()


def parse_key_entry(value: str) -> SigningKey:
    """``domain:selector:keyfile`` (the keyfile may itself contain colons)."""
    domain, _, rest = value.strip().partition(":")
    selector, _, keyfile = rest.partition(":")
    if not (domain and selector and keyfile):
        raise SignError(f"bad DKIM key entry {value!r}: want domain:selector:keyfile")
    return SigningKey(domain.lower(), selector, keyfile)


def lookup_keys(address: str) -> list[tuple[str, bool]]:
    """The signing table keys for an author, with their ``partial`` flag."""
    local, at, domain = address.rpartition("@")
    keys: list[tuple[str, bool]] = []
    if at and local:
        keys.append((address.lower(), False))
    domain = domain.lower().rstrip(".")
    if not domain:
        return keys
    keys.append((domain, bool(keys)))
    labels = domain.split(".")
    keys.extend(("." + ".".join(labels[i:]), True) for i in range(1, len(labels)))
    return keys


def author(headers: bytes, sender: str) -> str:
    """The From: header's first address, else the envelope sender."""
    for name, value in dkim.rfc822_parse(headers + b"\r\n")[0]:
        if name.lower() == b"from":
            addrs = email.utils.getaddresses([value.decode("utf-8", "replace")])
            if addrs and "@" in addrs[0][1]:
                return addrs[0][1]
    return sender


class Signer:
    """Signing as the configuration says; key files are read once per change (mtime)."""

    def __init__(self, cfg: Config) -> None:
        self.signing = open_maps(cfg.get("postbus_dkim_signing_table"),
                                 "postbus_dkim_signing_table")
        self.keys: Maps | None = None
        if cfg.get("postbus_dkim_key_table").strip():
            self.keys = open_maps(cfg.get("postbus_dkim_key_table"), "postbus_dkim_key_table")
        self.canon = canonicalization(cfg)
        self.headers = [h.lower() for h in cfg.list("postbus_dkim_signed_headers")]
        if "from" not in self.headers:
            raise ConfigError("the From header field must be signed",
                              parameter="postbus_dkim_signed_headers")
        self._pem: dict[str, tuple[float, bytes]] = {}

    def __bool__(self) -> bool:
        return bool(len(self.signing))

    async def key_for(self, address: str) -> SigningKey | None:
        """The key an author's mail is signed with; None: not signed."""
        try:
            name = None
            for key, partial in lookup_keys(address):
                name = await self.signing.find(key, partial=partial)
                if name is not None:
                    break
            if name is None:
                return None
            if self.keys is None:
                return parse_key_entry(name)
            entry = await self.keys.find(name.strip())
        except TableRetry as exc:
            raise SignError(f"DKIM table lookup failure: {exc}") from exc
        if entry is None:
            raise SignError(f"DKIM key {name.strip()!r} is not in postbus_dkim_key_table")
        return parse_key_entry(entry)

    def _private_key(self, path: str) -> bytes:
        try:
            mtime = os.stat(path).st_mtime
            cached = self._pem.get(path)
            if cached is None or cached[0] != mtime:
                with open(path, "rb") as fh:
                    cached = (mtime, fh.read())
                self._pem[path] = cached
        except OSError as exc:
            raise SignError(f"cannot read DKIM key {path}: {exc.strerror}") from exc
        return cached[1]

    async def sign(self, message: bytes, sender: str) -> tuple[SigningKey | None, bytes]:
        """The DKIM-Signature header (CRLF lines) for ``message`` (CRLF), or b''."""
        headers = message.split(b"\r\n\r\n", 1)[0]
        key = await self.key_for(author(headers, sender))
        if key is None:
            metrics.content_filter_checks.labels("dkim_sign", "none").inc()
            return None, b""
        start = time.monotonic()
        present = {name.lower() for name, _ in dkim.rfc822_parse(headers + b"\r\n")[0]}
        if b"from" not in present:  # DKIM must sign From:; say so, do not defer forever
            log.warning("warning: message from <%s> has no From: header; not DKIM-signed",
                        sender)
            metrics.content_filter_checks.labels("dkim_sign", "no_from").inc()
            return None, b""
        include = [h.encode() for h in self.headers if h.encode() in present]
        try:
            signature = dkim.DKIM(message, linesep=b"\r\n").sign(
                key.selector.encode(), key.domain.encode(), self._private_key(key.keyfile),
                canonicalize=self.canon, include_headers=include)
        except dkim.DKIMException as exc:
            metrics.content_filter_checks.labels("dkim_sign", "error").inc()
            raise SignError(f"DKIM signing with {key.keyfile} failed: {exc}") from exc
        metrics.content_filter_checks.labels("dkim_sign", "signed").inc()
        metrics.content_filter_check_seconds.labels("dkim_sign").observe(
            time.monotonic() - start)
        return key, signature
