"""Address canonicalization (≈ trivial-rewrite's rewrite.c, the "local" rule set).

``site!user`` becomes ``user@site`` (swap_bangpath), ``user%domain``
becomes ``user@domain`` (allow_percent_hack), a bare ``user`` gets
``@$myorigin`` (append_at_myorigin) and a domain without a dot gets
``.$mydomain`` (append_dot_mydomain); a source route is dropped and one
trailing dot of the domain is stripped. The resolver runs these rules
whenever it finds routing operators left in a local part; cleanup runs
them over every envelope address (:meth:`RewriteRules.internal`) and, in
the local or remote context, over the addresses in message headers
(:meth:`RewriteRules.external`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from postbus.config.loader import Config
from postbus.tok822 import (
    DOMLIT,
    QSTRING,
    Token,
    find,
    internalize,
    quote_822_local,
    rfind,
    scan,
    unquote_822_local,
)

#: ``local@domain.tld``: no rule changes it (it has an @, a dotted domain without a
#: trailing dot, nothing quoting would alter), so it skips the tokenizer
_PLAIN = re.compile(r'[^\x00-\x20\x7f"\\@]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+')
#: the same in external form: a dot-atom local part
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_EXTERNAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


@dataclass(frozen=True)
class RewriteRules:
    origin: str  # what a bare user gets appended (myorigin)
    domain: str  # what a dotless domain gets appended (mydomain)
    swap_bangpath: bool = True
    percent_hack: bool = True
    append_at_origin: bool = True
    append_dot_domain: bool = False

    @classmethod
    def local(cls, cfg: Config) -> RewriteRules:
        """The rules for addresses of local origin (trivial-rewrite's local_context)."""
        return cls(
            origin=cfg.get("myorigin"),
            domain=cfg.get("mydomain"),
            swap_bangpath=cfg.bool("swap_bangpath"),
            percent_hack=cfg.bool("allow_percent_hack"),
            append_at_origin=cfg.bool("append_at_myorigin"),
            append_dot_domain=cfg.bool("append_dot_mydomain"),
        )

    def rewrite(self, tokens: list[Token]) -> list[Token]:
        """One pass of the rules over an address (≈ rewrite_tree())."""
        if not tokens:
            return tokens
        if tokens == [(QSTRING, "")]:
            return tokens  # the null address
        if len(tokens) == 1 and tokens[0][0] == "@":
            return [(QSTRING, "")]  # a lone @ is the null address
        colon = find(tokens, ":")
        if tokens[0][0] == "@" and 0 <= colon < len(tokens) - 1:
            tokens = tokens[colon + 1 :]  # source route
        if rfind(tokens, "@") < 0:
            bang = find(tokens, "!")
            percent = rfind(tokens, "%")
            if self.swap_bangpath and bang >= 0:
                tokens = [*tokens[bang + 1 :], ("@", "@"), *tokens[:bang]]
            elif self.percent_hack and percent >= 0:
                tokens = [*tokens[:percent], ("@", "@"), *tokens[percent + 1 :]]
            elif self.append_at_origin and self.origin:
                tokens = [*tokens, ("@", "@"), *scan(self.origin)]
        at = rfind(tokens, "@")
        if (
            self.append_dot_domain
            and self.domain
            and 0 <= at < len(tokens) - 1
            and find(tokens, DOMLIT, at) < 0
            and find(tokens, ".", at) < 0
        ):
            tokens = [*tokens, (".", "."), *scan(self.domain)]
        if len(tokens) > 1 and tokens[-1][0] == "." and tokens[-2][0] not in (".", "@"):
            tokens = tokens[:-1]
        return tokens


    @classmethod
    def remote(cls, cfg: Config) -> RewriteRules | None:
        """The rules for headers from remote clients (trivial-rewrite's remote_context):
        remote_header_rewrite_domain in place of myorigin and mydomain; None when
        it is empty (then cleanup leaves such headers alone)."""
        domain = cfg.get("remote_header_rewrite_domain")
        if not domain:
            return None
        return replace(cls.local(cfg), origin=domain, domain=domain)

    def external(self, address: str) -> str:
        """An external (quoted) address through the rules (≈ rewrite_clnt() + rewrite_proto())."""
        if not address:
            return ""
        if _PLAIN_EXTERNAL.fullmatch(address):
            return address
        return quote_822_local(internalize(self.rewrite(scan(address)), spaces=False))

    def internal(self, address: str) -> str:
        """An internal (unquoted) address through the rules (≈ cleanup_rewrite_internal())."""
        if _PLAIN.fullmatch(address):
            return address
        return unquote_822_local(self.external(quote_822_local(address)))
