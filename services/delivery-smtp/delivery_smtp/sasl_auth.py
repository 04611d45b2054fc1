"""SMTP AUTH as a client (≈ smtp_sasl_glue.c, smtp_sasl_proto.c).

With ``smtp_sasl_auth_enable = yes``, after EHLO (and after STARTTLS and
the second EHLO) a server that offers AUTH gets the credentials that
``smtp_sasl_password_maps`` holds for it. The lookup keys, in Postfix's
order, the first found winning:

1. the sender, with ``smtp_sender_dependent_authentication = yes`` (its
   mail_addr_find() keys: ``user+ext@domain``, ``user@domain``, ``@domain``);
2. the server's host name (the MX host, or the host of ``[host]:port``);
3. the next-hop destination as written (``[mail.isp.example]:587``,
   ``example.com``).

The value is ``username:password`` (split at the first ``:``). No entry:
the session goes on unauthenticated, as strangers. An entry, but no
mechanism the server offers that ``smtp_sasl_mechanism_filter`` and the
security options allow, or a server that refuses: the session fails with
Postfix's text, every recipient still open is deferred (or bounced on a 5xx
with ``smtp_sasl_auth_soft_bounce = no``), and the next server is tried.

With ``smtp_sasl_auth_cache_name``, a 535 is remembered for a while
(:mod:`delivery_smtp.sasl_cache`).

Which security options apply depends on the connection, as in Postfix:
``smtp_sasl_security_options`` in clear text, ``smtp_sasl_tls_security_options``
under TLS, ``smtp_sasl_tls_verified_security_options`` under TLS with a
verified (matched) server certificate. The default ``noplaintext`` keeps
PLAIN and LOGIN, and so the password, off every connection unless the
administrator allows them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from delivery_smtp.sasl_cache import AuthCache
from delivery_smtp.session import Chat
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.delivery import Outcome, soften
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry
from postbus.resolve import Resolver
from postbus.sasl import security_options
from postbus.sasl.client import SaslClientError, start

log = logging.getLogger("postbus.delivery")

_MAX_STEPS = 100  # ≈ the loop guard of smtp_sasl_authenticate()

_SMTP = {
    "type": "smtp_sasl_type", "enable": "smtp_sasl_auth_enable",
    "maps": "smtp_sasl_password_maps", "sender": "smtp_sender_dependent_authentication",
    "soft": "smtp_sasl_auth_soft_bounce", "options": "smtp_sasl_security_options",
    "tls_options": "smtp_sasl_tls_security_options",
    "verified_options": "smtp_sasl_tls_verified_security_options",
    "filter": "smtp_sasl_mechanism_filter", "cache": "smtp_sasl_auth_cache_name",
    "cache_time": "smtp_sasl_auth_cache_time",
}
_LMTP = {
    "type": "lmtp_sasl_type", "enable": "lmtp_sasl_auth_enable",
    "maps": "lmtp_sasl_password_maps", "sender": "lmtp_sender_dependent_authentication",
    "soft": "lmtp_sasl_auth_soft_bounce", "options": "lmtp_sasl_security_options",
    "tls_options": "lmtp_sasl_tls_security_options",
    "verified_options": "lmtp_sasl_tls_verified_security_options",
    "filter": "lmtp_sasl_mechanism_filter", "cache": "lmtp_sasl_auth_cache_name",
    "cache_time": "lmtp_sasl_auth_cache_time",
}


@dataclass(frozen=True)
class Who:
    """Whom the credentials are for: the job's sender, the server, the next hop."""

    sender: str
    host: str
    dest: str


@dataclass(frozen=True)
class SaslStart:
    """The SASL client of a transport and the session it is asked to log in."""

    client: SaslClient
    sender: str
    dest: str


class SaslClient:
    """The SASL settings of one transport (``smtp_sasl_*``, ``lmtp_sasl_*`` for LMTP)."""

    def __init__(self, cfg: Config, lmtp: bool = False) -> None:
        n = _LMTP if lmtp else _SMTP
        if cfg.get(n["type"]).strip().lower() != "cyrus":
            raise ConfigError(f"{n['type']}: only cyrus is supported", parameter=n["type"])
        self.enabled = cfg.bool(n["enable"])
        self.maps: Maps = open_maps(cfg.get(n["maps"]), n["maps"])
        self.sender_dependent = cfg.bool(n["sender"])
        self.soft_bounce = cfg.bool(n["soft"])
        self.options = security_options(cfg, n["options"])
        self.tls_options = security_options(cfg, n["tls_options"])
        self.verified_options = security_options(cfg, n["verified_options"])
        self.filter = _mechanism_filter(cfg, n["filter"])
        self.resolver = Resolver(cfg) if self.enabled and self.sender_dependent else None
        name = cfg.get(n["cache"]).strip()
        self.cache = AuthCache(name, cfg.time(n["cache_time"]), n["cache"]) if name else None

    def reuse_key(self, nexthop: str, sender: str) -> str:
        """The session cache key: per sender when credentials may depend on it."""
        return f"{nexthop}\0{sender}" if self.enabled and self.sender_dependent else nexthop

    async def credentials(self, who: Who) -> tuple[str, str] | None:
        """(username, password) for this session, or None; TableRetry on a lookup error."""
        value: str | None = None
        if self.resolver is not None and who.sender:
            found = await self.resolver.find(self.maps, who.sender)
            value = found.value if found is not None else None
        if value is None:
            value = await self.maps.find(who.host)
        if value is None:
            value = await self.maps.find(who.dest)
        if value is None:
            return None
        username, _, password = value.partition(":")
        return username, password

    async def login(self, chat: Chat, who: Who, timeout: float | None,
                    verified: bool = False) -> Outcome | None:
        """Authenticate when there is reason to (≈ smtp_sasl_helo_login()); the outcome
        that ends the session, or None. Lost and TimedOut pass through."""
        if not self.enabled or "auth" not in chat.features:
            return None
        try:
            found = await self.credentials(who)
        except TableRetry:
            log.warning("%s lookup error", self.maps.title)
            return Outcome("deferred", "4.3.0", f"local data error while talking to {chat.namaddr}")
        if found is None:
            return None  # "so that we talk to each other like strangers"
        offered = [m for m in chat.features["auth"].split() if self.filter is None
                   or m.upper() in self.filter]
        if not offered:
            if chat.features["auth"].strip():
                log.warning("%s offered no supported AUTH mechanisms: '%s'",
                            chat.relay, chat.features["auth"])
            else:
                log.warning("%s offered null AUTH mechanism list", chat.relay)
            text = (f"SASL authentication failed: server {chat.namaddr} offered no compatible "
                    "authentication mechanisms for this type of connection security")
            return Outcome("deferred", "4.7.0", text)
        options = (self.verified_options if verified else self.tls_options) if chat.tls \
            else self.options
        return await self._authenticate(chat, who.host, offered, options, found, timeout)

    async def _authenticate(self, chat: Chat, host: str, offered: list[str],
                            options: frozenset[str], creds: tuple[str, str],
                            timeout: float | None) -> Outcome | None:
        """≈ smtp_sasl_authenticate()."""
        if self.cache is not None and (failed := await self.cache.find(host, *creds)):
            dsn, reply = failed
            dsn = soften(dsn) if self.soft_bounce else dsn
            text = f"SASL [CACHED] authentication failed; server {host} said: {reply}"
            return Outcome.by_dsn(dsn, text)
        try:
            exchange = start(offered, options, *creds)
        except SaslClientError as exc:
            return _cannot(chat, str(exc))
        initial = exchange.initial
        pending = b""  # an initial response too long for the AUTH line
        command = f"AUTH {exchange.mechanism}"
        if initial is not None:
            encoded = base64.b64encode(initial)
            if len(command) + 1 + len(encoded) + 2 <= 512:
                command += " " + encoded.decode()
            else:
                pending = encoded
        got = await chat.command(command.encode(), timeout=timeout)
        steps = 0
        while got.code // 100 == 3:
            steps += 1
            if steps > _MAX_STEPS:
                text = ("SASL authentication failed; authentication protocol loop with "
                        f"server {chat.namaddr}")
                return Outcome("deferred", "4.3.0", text)
            challenge = got.text.strip()
            if pending:
                if challenge:
                    # Postfix shows its own pending response here; that is the
                    # credentials, so the server's challenge is shown instead
                    text = (f"SASL authentication failed; non-empty initial {exchange.mechanism}"
                            f" challenge from server {chat.namaddr}: {challenge}")
                    return Outcome("deferred", "4.7.0", text)
                answer, pending = pending, b""
            else:
                try:
                    decoded = base64.b64decode(challenge, validate=True)
                except (binascii.Error, ValueError):
                    return _cannot(chat, "bad base64 challenge")
                try:
                    answer = base64.b64encode(exchange.step(decoded))
                except SaslClientError as exc:
                    return _cannot(chat, str(exc))
            got = await chat.command(answer, timeout=timeout)
        if got.code // 100 == 2:
            return None
        if self.cache is not None and got.code == 535:
            await self.cache.store(host, *creds, got.dsn, str(got))
        dsn = got.dsn
        if self.soft_bounce and got.code // 100 == 5:
            dsn = soften(dsn)
        text = f"SASL authentication failed; server {chat.namaddr} said: {got}"
        return Outcome.by_dsn(dsn, text)


def _cannot(chat: Chat, why: str) -> Outcome:
    text = f"SASL authentication failed; cannot authenticate to server {chat.namaddr}: {why}"
    return Outcome("deferred", "4.7.0", text)


def _mechanism_filter(cfg: Config, param: str) -> frozenset[str] | None:
    """smtp_sasl_mechanism_filter as upper-case names; None: no filter. Tables and
    files (``type:name``, ``/path``) are refused at start: not built yet."""
    words = cfg.list(param)
    for word in words:
        if ":" in word or word.startswith("/") or word.startswith("!"):
            raise ConfigError(f"{param}: only mechanism names are supported by Postbus, "
                              f"not {word!r}", parameter=param)
    return frozenset(w.upper() for w in words) or None
