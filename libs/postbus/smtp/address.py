"""SMTP envelope paths and ESMTP parameters (≈ smtpd.c extract_addr(), mail_cmd(), rcpt_cmd()).

What a client writes after ``MAIL FROM:`` / ``RCPT TO:`` becomes an
*internal* address: source route dropped, quotes and backslashes removed,
comments dropped (``"a b"@x`` -> ``a b@x``), as Postfix keeps it in the
queue and shows it in replies.  :func:`quote_local` gives the *external*
form back (``"a b"@x``), which Postfix logs as ``to=<...>``.

Postfix's leniency (``strict_rfc821_envelopes = no``) is followed, as
observed on Postfix 3.7: the angle brackets may be missing, blanks inside
them are ignored, a stray ``>`` is ignored.  What Postfix rejects is
rejected here with its reply (:class:`ReplyError`): blanks or specials in
an unquoted local part, empty or malformed domains, numeric domains
without brackets, bad address literals.

Parameters (RFC 1870 SIZE, 6152 BODY, 6531 SMTPUTF8, 3461 RET/ENVID/
NOTIFY/ORCPT) are checked with Postfix's replies; a repeated DSN parameter
is a syntax error, a repeated SIZE is not; ``AUTH=`` is kept for the log (sasl_sender=).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from postbus.smtp import replies as r
from postbus.smtp import xtext

__all__ = [
    "MailArgs",
    "RcptArgs",
    "ReplyError",
    "parse_address",
    "parse_mail",
    "parse_rcpt",
    "quote_local",
    "split_args",
    "valid_domain",
]


class ReplyError(ValueError):
    """Input the server answers with ``reply``.

    ``bad_address`` is the path token when Postfix logs "Illegal address
    syntax" for it (not for an unterminated ``<``); ``warning`` is another
    warning Postfix logs.
    """

    def __init__(
        self, reply: str, bad_address: str | None = None, warning: str | None = None
    ) -> None:
        super().__init__(reply)
        self.reply = reply
        self.bad_address = bad_address
        self.warning = warning


def _bad(reply: str, path: str) -> ReplyError:
    text = path.strip(_BLANKS)
    logged = not text.startswith("<") or (">" in text and text.count("<") == 1)
    return ReplyError(reply, path if logged else None)


@dataclass
class MailArgs:
    sender: str
    path: str = ""  # the path as the client wrote it, for log lines
    size: int | None = None
    body: str = ""  # "7BIT" or "8BITMIME" when given
    smtputf8: bool = False
    ret: str = ""  # FULL or HDRS
    envid: str = ""  # decoded xtext
    auth: str | None = None  # AUTH=<mailbox> as sent (xtext), not <> (RFC 4954)


@dataclass
class RcptArgs:
    address: str
    path: str = ""  # the path as the client wrote it, for log lines
    notify: str = ""  # NEVER or a comma list of SUCCESS, FAILURE, DELAY
    orcpt: str = ""  # decoded address of ORCPT=type;xtext


def split_args(text: str) -> list[str]:
    """Split on blanks, keeping ``<...>`` and ``"..."`` (with ``\\`` escapes) whole."""
    if '"' not in text and "\\" not in text:
        words = [w for w in _BLANK_RUN.split(text) if w]
        if all(w.count("<") == w.count(">") for w in words):
            return words  # the common case: no blanks inside brackets
    tokens: list[str] = []
    cur: list[str] = []
    quote = angle = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and (quote or angle):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quote = not quote
        elif not quote and ch == "<":
            angle = True
        elif not quote and ch == ">":
            angle = False
        elif ch in " \t" and not quote and not angle:
            if cur:
                tokens.append("".join(cur))
                cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if cur:
        tokens.append("".join(cur))
    return tokens


_LETTER = r"A-Za-z0-9_\x80-\U0010ffff"  # underscores and UTF-8 are allowed, as in Postfix
_LABEL = re.compile(rf"[{_LETTER}]([{_LETTER}\-]*[{_LETTER}])?")
_NUMERIC = re.compile(r"[0-9.]+")
_PLAIN = re.compile(r'[^<>\[\],;:@" \t\\()\x00-\x1f\x7f]*(@[^@" \t\\()<>\x00-\x1f\x7f]*)?')
_BLANKS = " \t"  # what separates SMTP words: only these, as Postfix's smtpd_token()
_BLANK_RUN = re.compile("[ \t]+")
_DOMAIN_JUNK = re.compile(r'["\\()<>\s]')
_LOCAL_SPECIALS = frozenset('<>],;:" \t')
# RFC 5321's Dot-string (atoms of atext joined by single dots), UTF-8 allowed as Postfix's
# 8BITCLEAN: a local part that needs no quoting
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010ffff"
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")


@functools.lru_cache(maxsize=4096)
def valid_domain(domain: str) -> bool:
    """A host name or address literal as Postfix accepts it
    (≈ valid_hostname(), valid_mailhost_literal())."""
    if domain.startswith("["):
        if not domain.endswith("]"):
            return False
        literal = domain[1:-1]
        if literal[:5].lower() == "ipv6:":
            try:
                ipaddress.IPv6Address(literal[5:])
            except ValueError:
                return False
            return True
        try:
            ipaddress.IPv4Address(literal)
        except ValueError:
            return False
        return True
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(name) > 255 or _NUMERIC.fullmatch(name):
        return False
    return all(len(label) <= 63 and _LABEL.fullmatch(label) for label in name.split("."))


def _unquote_local(local: str) -> str | None:
    """Internal form of a local part, or None when Postfix would call it bad syntax."""
    out: list[str] = []
    i, n = 0, len(local)
    depth = 0
    quote = False
    while i < n:
        ch = local[i]
        if ch == "\\" and i + 1 < n:
            if depth == 0:
                out.append(local[i + 1])
            i += 2
            continue
        if quote:
            if ch == '"':
                quote = False
            else:
                out.append(ch)
        elif ch == '"' and depth == 0:
            quote = True
        elif ch == "[" and depth == 0:  # a domain literal, even here, as tok822 reads it
            close = local.find("]", i)
            out.append(local[i : close + 1] if close >= 0 else local[i:] + "]")
            i = close + 1 if close >= 0 else n
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth:
            pass
        elif ch in _LOCAL_SPECIALS:  # control characters pass, as in Postfix's tok822
            return None
        else:
            out.append(ch)
        i += 1
    if quote or depth:
        return None
    return "".join(out)


def _split_at(addr: str) -> int:
    """Index of the ``@`` that starts the domain (outside quotes and brackets), or -1."""
    quote = bracket = False
    at = -1
    i = 0
    while i < len(addr):
        ch = addr[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"' and not bracket:
            quote = not quote
        elif ch == "[" and not quote:
            bracket = True
        elif ch == "]" and not quote:
            bracket = False
        elif ch == "@" and not quote and not bracket:
            at = i
        i += 1
    return at


def _unquoted_rfind(text: str, char: str) -> int:
    """Index of the last ``char`` outside double quotes (backslash escapes), or -1."""
    if '"' not in text and "\\" not in text:  # the usual address: nothing to skip
        return text.rfind(char)
    found = -1
    quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            quote = not quote
        elif ch == char and not quote:
            found = i
        i += 1
    return found


def parse_address(token: str, *, strict: bool = False) -> str:
    """The internal form of a MAIL/RCPT path token; ``""`` for ``<>``.

    Raises ValueError for what Postfix rejects as "Bad ... address syntax".
    """
    text = token.strip(_BLANKS)
    if text.startswith("<"):
        end = _unquoted_rfind(text, ">")
        if end < 0:
            raise ValueError("missing >")
        inner = text[1:end].strip(_BLANKS).rstrip(">").strip(_BLANKS)
        if text[end + 1 :].strip(_BLANKS):
            raise ValueError("text after >")
    elif strict:
        raise ValueError("missing <>")
    else:
        inner = text.rstrip(">").strip(_BLANKS)
    if _unquoted_rfind(inner, "<") >= 0:
        raise ValueError("nested <")
    if inner.startswith("@") and ":" in inner:  # source route: @a,@b:user@domain
        inner = inner[inner.index(":") + 1 :]
    if not inner:
        return ""
    if _PLAIN.fullmatch(inner):  # the common case: nothing quoted, escaped or commented
        return inner
    at = _split_at(inner)
    if at < 0:
        bare = _unquote_local(inner)
        if bare is None:
            raise ValueError("bad local part")
        return bare
    unquoted = _unquote_local(inner[:at])
    domain = inner[at + 1 :]
    if unquoted is None or _DOMAIN_JUNK.search(domain):
        raise ValueError("bad address")
    return f"{unquoted}@{domain}"


def quote_local(address: str) -> str:
    """The external form: the local part quoted when RFC 5321 needs it (≈ quote_821_local())."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not local or _DOT_ATOM.fullmatch(local):
        return address
    quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{quoted}@{domain}" if at else quoted


def _path_token(tokens: list[str], keyword: str) -> tuple[str, list[str]] | None:
    """Split ``FROM:<a>`` / ``FROM: <a>`` into the path and the parameters."""
    if not tokens or tokens[0][: len(keyword)].upper() != keyword:
        return None
    rest = tokens[0][len(keyword) :]
    if rest:
        return rest, tokens[1:]
    if len(tokens) < 2:
        return None
    return tokens[1], tokens[2:]


def _envelope(
    arg: str, keyword: str, syntax: str, bad: str, strict: bool
) -> tuple[str, str, list[str]]:
    """The address, the path as written, and the ESMTP parameters of MAIL/RCPT."""
    split = _path_token(split_args(arg), keyword)
    if split is None:
        raise ReplyError(syntax)
    path, params = split
    try:
        return parse_address(path, strict=strict), path, params
    except ValueError:
        raise _bad(bad, path) from None


def parse_mail(
    arg: str, *, strict: bool = False, dsn: bool = True, smtputf8: bool = True
) -> MailArgs:
    """``MAIL`` arguments; raises ReplyError with Postfix's reply. ``dsn``/``smtputf8``
    False: that EHLO keyword is not offered (smtpd_discard_ehlo_keywords, smtputf8_enable),
    so RET/ENVID are refused and SMTPUTF8 is an unknown option."""
    address, path, params = _envelope(arg, "FROM:", r.MAIL_SYNTAX, r.BAD_SENDER_SYNTAX, strict)
    mail = MailArgs(address, path)
    for param in params:
        name, eq, value = param.partition("=")
        key = name.upper()
        if key == "SIZE" and eq:
            if not value.isdigit() or not value.isascii():
                raise ReplyError(r.BAD_SIZE)
            digits = value.lstrip("0")
            if len(digits) > 19 or (digits and int(digits) > OFF_T_MAX):
                raise ReplyError(r.SIZE_EXCEEDS_FS_LIMIT)  # more than Postfix's off_t holds
            mail.size = int(value)
        elif key == "BODY" and eq and value.upper() in ("7BIT", "8BITMIME"):
            mail.body = value.upper()
        elif key == "SMTPUTF8" and not eq and smtputf8:
            mail.smtputf8 = True
        elif key in ("RET", "ENVID") and eq and not dsn:
            raise ReplyError(r.DSN_DISABLED)
        elif key == "RET" and eq:
            if mail.ret or value.upper() not in ("FULL", "HDRS"):
                raise ReplyError(r.BAD_RET)
            mail.ret = value.upper()
        elif key == "ENVID" and eq:
            if mail.envid or not value or not xtext.valid(value) or len(value) > 100:
                raise ReplyError(r.BAD_ENVID)
            mail.envid = xtext.decode(value)
        elif key == "AUTH" and eq:  # ≈ smtpd_sasl_mail_opt()
            if mail.auth is not None:
                raise ReplyError(r.MULTIPLE_AUTH)
            if value != "<>":
                mail.auth = "".join(c if c.isprintable() else "?" for c in value)
        else:
            raise ReplyError(r.UNSUPPORTED_OPTION.format(option=param))
    return mail


OFF_T_MAX = 2**63 - 1
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_rcpt(arg: str, *, strict: bool = False, dsn: bool = True) -> RcptArgs:
    """``RCPT`` arguments; raises ReplyError with Postfix's reply (``dsn`` as parse_mail)."""
    address, path, params = _envelope(arg, "TO:", r.RCPT_SYNTAX, r.BAD_RECIPIENT_SYNTAX, strict)
    rcpt = RcptArgs(address, path)
    if not rcpt.address:
        raise _bad(r.BAD_RECIPIENT_SYNTAX, path)
    for param in params:
        name, eq, value = param.partition("=")
        key = name.upper()
        if key in ("NOTIFY", "ORCPT") and eq and not dsn:
            raise ReplyError(r.DSN_DISABLED)
        if key == "NOTIFY" and eq:
            words = value.upper().split(",")
            for word in words:
                if word not in _NOTIFY_WORDS and word != "NEVER":
                    warning = f'unknown DSN NOTIFY command value "{word}" in "{value}"'
                    raise ReplyError(r.BAD_NOTIFY, warning=warning)
            ok = words == ["NEVER"] or (
                all(w in _NOTIFY_WORDS for w in words) and len(set(words)) == len(words)
            )
            if rcpt.notify or not ok:
                raise ReplyError(r.BAD_NOTIFY)
            rcpt.notify = ",".join(words)
        elif key == "ORCPT" and eq:
            kind, semi, text = value.partition(";")
            if kind.lower() == "utf-8":  # RFC 6533: utf-8-addr-xtext / unitext
                decoded = xtext.uxtext_decode(text)
                if rcpt.orcpt or not semi or decoded is None or not decoded:
                    raise ReplyError(r.BAD_ORCPT)
                rcpt.orcpt = decoded
                continue
            if rcpt.orcpt or not semi or not kind or not text or not xtext.valid(text):
                raise ReplyError(r.BAD_ORCPT)
            rcpt.orcpt = xtext.decode(text)
        else:
            raise ReplyError(r.UNSUPPORTED_OPTION.format(option=param))
    return rcpt
