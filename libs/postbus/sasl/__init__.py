"""SMTP AUTH on the server side: SASL backends behind one small interface (≈ Postfix's xsasl/).

A backend (:class:`Backend`) knows which mechanisms it offers, each with
Dovecot's security properties (``plaintext``, ``anonymous`` ...), and runs
one exchange at a time (:class:`Exchange`): ``first(mechanism,
initial_response)`` then ``next(response)`` until the step is DONE, FAIL or
TEMP.  Responses and challenges stay base64 as on the wire, so that the
Dovecot backend passes them through untouched, as Postfix does.

``smtpd_sasl_type`` picks the backend: ``dovecot`` (:mod:`.dovecot`, the
Dovecot auth protocol on smtpd_sasl_path) or ``postbus`` (:mod:`.builtin`,
users in Redis with argon2 hashes).  Cyrus is not built: refused at start.

:func:`filter_mechanisms` is Postfix's xsasl_dovecot_server_mech_filter():
``smtpd_sasl_security_options = noanonymous, noplaintext`` keeps the
mechanisms without those properties, ``forward_secrecy`` and
``mutual_auth`` keep the mechanisms that have them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from postbus.config.conv import ConfigError
from postbus.config.loader import Config

__all__ = ["Backend", "Exchange", "Mechanism", "Status", "Step", "filter_mechanisms",
           "open_backend", "security_options"]


class Status(enum.Enum):
    DONE = "done"  # authenticated: Step.username says as whom
    MORE = "more"  # a challenge (base64) in Step.text
    FAIL = "fail"  # 535, with the reason in Step.text
    TEMP = "temp"  # 454, with the reason in Step.text


@dataclass(frozen=True)
class Step:
    status: Status
    text: str = ""
    username: str | None = None


@dataclass(frozen=True)
class Mechanism:
    name: str
    props: frozenset[str] = frozenset()  # Dovecot's words: plaintext, anonymous, private ...


class Exchange(Protocol):
    """One AUTH command's conversation with the backend."""

    async def first(self, mechanism: str, response: str | None) -> Step: ...

    async def next(self, response: str) -> Step: ...

    async def close(self) -> None: ...


class Backend(Protocol):
    async def mechanisms(self) -> list[Mechanism] | None:
        """The offered mechanisms; None when the backend cannot be reached."""

    def exchange(self, *, service: str, client_addr: str, server_addr: str,
                 secured: bool) -> Exchange: ...

    async def aclose(self) -> None:
        """Close what the backend holds open (smtpd's stop)."""


#: smtpd_sasl_security_options words -> the Dovecot property they exclude (no...) or require.
_NEGATIVE = {"noplaintext": "plaintext", "noactive": "active", "nodictionary": "dictionary",
             "noanonymous": "anonymous"}
_POSITIVE = {"forward_secrecy": "forward-secrecy", "mutual_auth": "mutual-auth"}


def security_options(cfg: Config, param: str) -> frozenset[str]:
    """The words of a security-options parameter; an unknown word is fatal, as in Postfix."""
    words = frozenset(w.lower() for w in cfg.list(param))
    for word in words:
        if word not in _NEGATIVE and word not in _POSITIVE:
            raise ConfigError(f'unknown {param} value "{word}"', parameter=param)
    return words


def filter_mechanisms(mechs: list[Mechanism], options: frozenset[str]) -> list[str]:
    """The mechanism names these options keep, in the backend's order."""
    exclude = {_NEGATIVE[w] for w in options if w in _NEGATIVE}
    require = {_POSITIVE[w] for w in options if w in _POSITIVE}
    return [m.name for m in mechs
            if "private" not in m.props and require <= m.props and not exclude & m.props]


def open_backend(cfg: Config) -> Backend:
    """The backend smtpd_sasl_type names (ConfigError for one that is not built)."""
    kind = cfg.get("smtpd_sasl_type").strip().lower()
    if kind == "dovecot":
        from postbus.sasl.dovecot import DovecotBackend

        return DovecotBackend.from_config(cfg)
    if kind == "postbus":
        from postbus.sasl.builtin import BuiltinBackend

        return BuiltinBackend.from_config(cfg)
    raise ConfigError(f"SASL type {kind or '(empty)'} is not supported by Postbus "
                      "(use dovecot or postbus)", parameter="smtpd_sasl_type")
