"""One webhook's settings, read from its master.cf service (main.cf plus its ``-o``).

Each master.cf line whose command is ``webhooks`` is one endpoint; its
service name names the webhook (its durable consumer ``webhook-<name>``, its
dead-letter subject ``postbus.webhook.dead.<name>``, the ``webhook`` label of
its metrics), so it must be a plain word. Everything is checked at start:
a bad URL, an unknown event kind or one postbus_events_record leaves out, a
missing secret stop the role with the parameter's name.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from postbus import events
from postbus.config.conv import ConfigError
from postbus.config.loader import Config

URL = "postbus_webhook_url"
EVENTS = "postbus_webhook_events"
SECRET = "postbus_webhook_secret"
SECRET_FILE = "postbus_webhook_secret_file"
TIMEOUT = "postbus_webhook_timeout"
MAX_ATTEMPTS = "postbus_webhook_max_attempts"
MIN_BACKOFF = "postbus_webhook_minimal_backoff_time"
MAX_BACKOFF = "postbus_webhook_maximal_backoff_time"
CONCURRENCY = "postbus_webhook_concurrency"

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
SECRET_PREFIX = "whsec_"  # Standard Webhooks: the rest is the key in base64


@dataclass(frozen=True)
class Settings:
    name: str
    url: str  # empty: this webhook sends nothing
    kinds: frozenset[str]
    keys: tuple[bytes, ...]  # one signature per key (a rotation signs with old and new)
    timeout: float
    max_attempts: int
    min_backoff: float
    max_backoff: float
    concurrency: int

    @classmethod
    def from_config(cls, cfg: Config, name: str) -> Settings:
        if not NAME.fullmatch(name):
            raise ConfigError(
                f"webhooks service name {name!r}: use letters, digits, - and _ only")
        url = cfg.get(URL).strip()
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"bad URL {url!r}: expected http:// or https://host/...",
                                  parameter=URL)
        kinds = cfg.list(EVENTS)
        unknown = [kind for kind in kinds if kind not in events.KINDS]
        if unknown:
            raise ConfigError(f"unknown event kind {unknown[0]!r}; known: "
                              f"{', '.join(events.KINDS)}", parameter=EVENTS)
        unrecorded = [kind for kind in kinds if kind not in cfg.list(events.RECORD)]
        if url and unrecorded:  # it would wait for events that never come
            raise ConfigError(f"event kind {unrecorded[0]!r} is not recorded: add it to "
                              f"{events.RECORD} too", parameter=EVENTS)
        keys = _keys(cfg) if url else ()
        return cls(
            name=name, url=url, kinds=frozenset(kinds), keys=keys,
            timeout=cfg.time(TIMEOUT), max_attempts=cfg.int(MAX_ATTEMPTS),
            min_backoff=cfg.time(MIN_BACKOFF), max_backoff=cfg.time(MAX_BACKOFF),
            concurrency=cfg.int(CONCURRENCY),
        )

    def backoff(self, attempt: int) -> float:
        """Seconds before the POST after the ``attempt``-th failed one (doubling)."""
        return min(self.max_backoff, self.min_backoff * 2 ** min(max(attempt, 1) - 1, 30))

    @property
    def shown_url(self) -> str:
        """The URL for logs: no user, password or query (they may hold tokens)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


def _keys(cfg: Config) -> tuple[bytes, ...]:
    """The HMAC keys: from postbus_webhook_secret or the file it names; never neither."""
    text, origin = cfg.get(SECRET), SECRET
    path = cfg.get(SECRET_FILE).strip()
    if path:
        if text.strip():
            raise ConfigError(f"set {SECRET} or {SECRET_FILE}, not both", parameter=SECRET_FILE)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", parameter=SECRET_FILE) from exc
        origin = SECRET_FILE
    words = text.split()
    if not words:
        raise ConfigError(f"{URL} is set, but no secret to sign with ({SECRET} or {SECRET_FILE})",
                          parameter=origin)
    return tuple(_key(word, origin) for word in words)


def _key(word: str, origin: str) -> bytes:
    if not word.startswith(SECRET_PREFIX):
        return word.encode()
    try:
        key = base64.b64decode(word[len(SECRET_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"a {SECRET_PREFIX} secret must be base64: {exc}",
                          parameter=origin) from exc
    if not key:
        raise ConfigError(f"empty {SECRET_PREFIX} secret", parameter=origin)
    return key
