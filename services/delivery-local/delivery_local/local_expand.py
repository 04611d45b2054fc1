"""``$name`` expansion in forward_path, command_execution_directory (≈ local/local_expand.c
with util/mac_expand.c).

Names: ``user``, ``home``, ``shell``, ``domain``, ``local``, ``mailbox``,
``recipient``, ``extension``, ``recipient_delimiter``. Forms: ``$name``,
``${name}``, ``$(name)``, ``${name?text}`` (text when name has a value),
``${name:text}`` (text when it has none). A value's characters outside
the filter (``forward_expansion_filter``...) become ``_``, so an address
extension cannot add ``/`` or ``..`` to a path. A plain reference to a
name without a value makes the whole result *undefined* (Postfix skips
such a forward_path entry); a syntax error raises :class:`ExpandError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from postbus.maps.addr_find import split_extension

log = logging.getLogger("postbus.delivery")

_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class ExpandError(ValueError):
    """Bad ``$`` syntax in a local(8) template."""


@dataclass
class Expansion:
    text: str
    undefined: bool = False  # a plain $name had no value
    extension_used: bool = False  # $extension was used (the extension "matched")


def censor(value: str, allowed: str) -> str:
    """Characters not in ``allowed`` become ``_`` (an empty filter allows everything)."""
    if not allowed:
        return value
    return "".join(ch if ch in allowed else "_" for ch in value)


def _closing(pattern: str, start: int, open_: str, close: str) -> int:
    level = 0
    for i in range(start, len(pattern)):
        if pattern[i] == open_:
            level += 1
        elif pattern[i] == close:
            level -= 1
            if level == 0:
                return i
    raise ExpandError(f"missing '{close}' in \"{pattern}\"")


def local_expand(pattern: str, attrs: Mapping[str, str | None], allowed: str) -> Expansion:
    """Expand ``pattern`` with ``attrs`` (a missing or empty value is no value)."""
    result = Expansion("")
    out: list[str] = []

    def value(name: str) -> str | None:
        return attrs.get(name) or None

    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if pattern[i + 1:i + 2] == "$":
            out.append("$")
            i += 2
            continue
        if pattern[i + 1:i + 2] in ("{", "("):
            open_ = pattern[i + 1]
            end = _closing(pattern, i + 1, open_, "}" if open_ == "{" else ")")
            body, i = pattern[i + 2:end], end + 1
            name = body
            op, text = "", ""
            for k, c in enumerate(body):
                if c in "?:":
                    name, op, text = body[:k], c, body[k + 1:]
                    break
        else:
            k = i + 1
            while k < len(pattern) and pattern[k] in _NAME:
                k += 1
            name, op, text, i = pattern[i + 1:k], "", "", k
        if not name or any(c not in _NAME for c in name):
            raise ExpandError(f'attribute name syntax error in "{pattern}"')
        found = value(name)
        if op == "?":
            if found is not None:
                inner = local_expand(text, attrs, allowed)
                result.undefined |= inner.undefined
                result.extension_used |= inner.extension_used
                out.append(inner.text)
        elif op == ":":
            if found is None:
                inner = local_expand(text, attrs, allowed)
                result.undefined |= inner.undefined
                out.append(inner.text)
        elif found is None:
            result.undefined = True
        else:
            result.extension_used |= name == "extension"
            out.append(censor(found, allowed))
    result.text = "".join(out)
    return result


def recipient_attrs(
    address: str, delimiter: str, home: str | None = None, shell: str | None = None
) -> dict[str, str | None]:
    """The names a template may use for ``address`` (≈ deliver_recipient()'s msg_attr): the
    local part in lower case, the user without the extension; an extension with ``/`` is
    dropped, as Postfix drops it (``address with illegal extension``)."""
    local, at, domain = address.rpartition("@")
    local = (local if at else address).lower()
    user, ext = split_extension(local, delimiter)
    if ext and "/" in ext:
        log.warning("address with illegal extension: %s", local)
        local, ext = user, None
    return {
        "user": user, "home": home, "shell": shell, "domain": domain.lower() or None,
        "local": local, "mailbox": local, "recipient": address,
        "extension": ext[1:] if ext else None,
        "recipient_delimiter": ext[:1] if ext else delimiter[:1],
    }
