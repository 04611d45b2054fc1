"""Delivery status notification templates in bounce(5) form (≈ bounce_template.c,
bounce_templates.c): the one definition of what a notice says.

Four templates, Postfix 3.7's built-in texts to the letter: ``failure``
(mail returned), ``delay`` (still being retried), ``success`` (delivered,
relayed or expanded) and ``verify`` (a requested delivery report). Each
has a charset, a From:, a Subject: and, for failure and delay, the
Postmaster-Subject: of the copy that notify_classes sends to postmaster.

:func:`load_file` reads ``bounce_template_file`` as Postfix's bounce
daemon does, with its warnings and errors word for word; a template it
finds unusable is reported and the built-in one kept. The qmgr composes
its notices from the templates (:mod:`qmgr.bouncer`); ``postbus postconf
-t`` prints them and ``postconf -b`` prints their expanded text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, cast

from postbus.config.conv import ConfigError, parse_time
from postbus.config.main_cf import expand

__all__ = [
    "DEFAULTS", "KINDS", "MAIL_DAEMON", "BounceTemplate", "Kind", "TemplateError", "load",
    "load_file",
]

Kind = Literal["failure", "delay", "success", "verify"]
#: Every class, in the order Postfix loads and prints them.
KINDS: tuple[Kind, ...] = ("failure", "delay", "success", "verify")
#: The notices' From: address before cleanup qualifies it (≈ MAIL_ADDR_MAIL_DAEMON).
MAIL_DAEMON = "MAILER-DAEMON"
BUILT_IN = "[built-in]"

_SPACE = " \t\n\v\f\r"
_HEADER = re.compile(r"([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # ≈ is_header(): a label, a colon
_TIME_PARAMETERS = {"delay_warning_time": "h", "maximal_queue_lifetime": "d"}  # and units
_DIVISORS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}

Warn = Callable[[str], None]
Lookup = Callable[[str], str | None]


class TemplateError(Exception):
    """A fatal template error, worded as Postfix's bounce daemon words it."""


@dataclass(frozen=True)
class BounceTemplate:
    """One notice template: pseudo-headers and the message text, unexpanded."""

    kind: Kind
    subject: str
    postmaster_subject: str | None  # None: no postmaster copy of this kind
    text: tuple[str, ...]
    charset: str = "us-ascii"
    sender: str = f"Mail Delivery System <{MAIL_DAEMON}>"  # the From: header
    encoding: str = "7bit"  # 8bit when the text is not ASCII
    origin: str = BUILT_IN

    def dump(self) -> str:
        """The template in bounce(5) form (≈ bounce_template_dump() and its caller)."""
        lines = [f"{self.kind}_template = <<EOF", f"Charset: {self.charset}",
                 f"From: {self.sender}", f"Subject: {self.subject}"]
        if self.postmaster_subject is not None:
            lines.append(f"Postmaster-Subject: {self.postmaster_subject}")
        return "\n".join([*lines, "", *self.text, "EOF"]) + "\n"

    def expand(self, lookup: Lookup, warn: Warn = lambda text: None,
               utf8: bool = False) -> list[str]:
        """The message text with ``$name`` replaced (≈ bounce_template_expand()).

        ``lookup`` gives a parameter's value, fully expanded, or None;
        ``$delay_warning_time_hours`` and ``$maximal_queue_lifetime_days``
        (any unit from seconds to weeks, rounded down) are that time in the
        unit; with ``utf8`` (smtputf8_enable) ``$myhostname`` and
        ``$mydomain`` are shown in UTF-8. Unprintable characters become ``?``.
        """
        lines = []
        undefined: list[str] = []

        def value_of(name: str) -> str | None:
            value = self._time_value(name, lookup, warn)
            if value is None:
                value = lookup(name)
                if value is not None and utf8 and name in ("myhostname", "mydomain"):
                    value = self._to_utf8(name, value, warn)
            if value is None:
                undefined.append(name)
                return None
            return "".join(ch if ch.isprintable() else "?" for ch in value)

        for line in self.text:
            try:
                expanded = expand(line, value_of, recursive=False)
            except ConfigError as err:
                warn(str(err))  # mac_parse() warns first
                raise TemplateError(f"{self.origin}: bad $name syntax in {self.kind} "
                                    f"template: {line}") from None
            if undefined:
                raise TemplateError(f"{self.origin}: undefined $name in {self.kind} "
                                    f"template: {line}")
            lines.append(expanded)
        return lines

    def _time_value(self, name: str, lookup: Lookup, warn: Warn) -> str | None:
        """``$delay_warning_time_hours`` and friends (≈ bounce_template_lookup()), with
        Postfix's warnings when the unit is too small or too large for the value."""
        for parameter, unit in _TIME_PARAMETERS.items():
            if not name.startswith(parameter + "_"):
                continue
            suffix = name[len(parameter) + 1 :]
            divisor = _DIVISORS.get(suffix)
            if divisor is None:
                raise TemplateError(f'{self.origin}: unrecognized suffix "{suffix}" '
                                    f'in parameter "{name}"')
            seconds = int(parse_time(lookup(parameter) or "0", unit))
            result = seconds // divisor
            if result > 999 and divisor < 86400:
                warn(f'{self.origin}: excessive result "{result}" in {self.kind} template '
                     f'conversion of parameter "{name}"')
                warn(f'please increase time unit "{suffix}" of "{name}" in {self.kind} template')
                warn("for instructions see the bounce(5) manual")
            elif result == 0 and seconds and divisor > 1:
                warn(f'{self.origin}: zero result in {self.kind} template conversion of '
                     f'parameter "{name}"')
                warn(f'please reduce time unit "{suffix}" of "{name}" in {self.kind} template')
                warn("for instructions see the bounce(5) manual")
            return str(result)
        return None

    def _to_utf8(self, name: str, value: str, warn: Warn) -> str:
        """An IDNA (``xn--``) domain for presentation (≈ midna_domain_to_utf8())."""
        if not value.isascii():
            warn(f'{self.origin}: conversion "{name}" failed: non-ASCII input value: "{value}"')
            return value
        try:
            return value.encode("ascii").decode("idna")
        except UnicodeError:
            warn(f'{self.origin}: conversion "{name}" failed: input value: "{value}"')
            return value


_SIGNATURE = "                   The mail system"
_ASK_POSTMASTER = (
    "For further assistance, please send mail to postmaster.",
    "",
    "If you do so, please include this problem report. You can",
    "delete your own text from the attached returned message.",
)

#: The built-in templates by class, in Postfix's order.
DEFAULTS: dict[Kind, BounceTemplate] = {
    "failure": BounceTemplate(
        "failure", "Undelivered Mail Returned to Sender", "Postmaster Copy: Undelivered Mail",
        (
            "This is the mail system at host $myhostname.",
            "",
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
            "",
            *_ASK_POSTMASTER,
            "",
            _SIGNATURE,
        ),
    ),
    "delay": BounceTemplate(
        "delay", "Delayed Mail (still being retried)", "Postmaster Warning: Delayed Mail",
        (
            "This is the mail system at host $myhostname.",
            "",
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            "Your message could not be delivered for more than "
            "$delay_warning_time_hours hour(s).",
            "It will be retried until it is $maximal_queue_lifetime_days day(s) old.",
            "",
            *_ASK_POSTMASTER,
            "",
            _SIGNATURE,
        ),
    ),
    "success": BounceTemplate(
        "success", "Successful Mail Delivery Report", None,
        (
            "This is the mail system at host $myhostname.",
            "",
            "Your message was successfully delivered to the destination(s)",
            "listed below. If the message was delivered to mailbox you will",
            "receive no further notifications. Otherwise you may still receive",
            "notifications of mail delivery errors from other systems.",
            "",
            _SIGNATURE,
        ),
    ),
    "verify": BounceTemplate(
        "verify", "Mail Delivery Status Report", None,
        (
            "This is the mail system at host $myhostname.",
            "",
            "Enclosed is the mail delivery report that you requested.",
            "",
            _SIGNATURE,
        ),
    ),
}


def _parse(template: BounceTemplate, origin: str, buffer: str, warn: Warn) -> BounceTemplate:
    """A built-in template with what a file gives for it (≈ bounce_template_parse_buffer());
    an unusable one is reported and the built-in one kept."""
    lines = buffer.split("\n")
    fields: dict[str, str] = {}
    at = 0

    def ignore(reason: str) -> BounceTemplate:
        warn(f"{origin}: {reason} in {template.kind} template -- ignoring this template")
        return template

    while at < len(lines) and (header := _HEADER.match(lines[at])):
        label = header.group(1)
        value = lines[at][len(label) :].lstrip(":" + _SPACE)
        at += 1
        if not value:
            return ignore(f'empty "{label}" header value')
        if not value.isascii():
            return ignore(f'non-ASCII "{label}" header value')
        key = label.lower()
        if key == "charset":
            fields["charset"] = value
        elif key == "from":
            fields["sender"] = value
        elif key == "subject":
            fields["subject"] = value
        elif key == "postmaster-subject" and template.postmaster_subject is not None:
            fields["postmaster_subject"] = value
        elif key == "postmaster-subject":
            return ignore(f'inapplicable "{label}" header label')
        else:
            return ignore(f'unknown "{label}" header label')
    while at < len(lines) and not lines[at].strip(_SPACE):
        at += 1
    if at == len(lines):
        return ignore("missing message text")
    text = tuple(lines[at:])
    encoding = template.encoding
    if not all(line.isascii() for line in text):
        if fields.get("charset", template.charset).lower() == "us-ascii":
            warn(f"{origin}: 8-bit message text in {template.kind} template")
            warn("please specify a charset value other than us-ascii")
            warn("-- ignoring this template for now")
            return template
        encoding = "8bit"
    return replace(template, text=text, encoding=encoding, origin=origin,
                   **fields)  # type: ignore[arg-type]


def load(text: str, origin: str, warn: Warn) -> dict[Kind, BounceTemplate]:
    """The built-in templates with those a bounce(5) file overrides (≈ bounce_templates_load()).

    Line numbers in messages count as Postfix's do (one more than the line).
    """
    templates = dict(DEFAULTS)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lineno = 1
    at = 0
    while at < len(lines):
        line = lines[at]
        at += 1
        lineno += 1
        stripped = line.lstrip(_SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        name, value = _split_nameval(line, origin, lineno)
        if value.startswith("<<"):
            marker = value[2:].lstrip(_SPACE)
            if not marker:
                raise TemplateError(f"{origin}, line {lineno}: missing end marker after <<")
            if not marker[0].isascii() or not marker[0].isalnum():
                raise TemplateError(f"{origin}, line {lineno}: malformed end marker after <<")
            body: list[str] = []
            ended = False
            while at < len(lines):
                at += 1
                lineno += 1
                if lines[at - 1] == marker:
                    ended = True
                    break
                body.append(lines[at - 1])
            if not ended:
                warn(f'{origin}, line {lineno}: missing "{marker}" end marker')
            value = "\n".join(body)
        kind = name.removesuffix("_template") if name.endswith("_template") else ""
        if kind in KINDS:
            known = cast(Kind, kind)
            templates[known] = _parse(DEFAULTS[known], origin, value, warn)
        else:
            warn(f"{origin}, line {lineno}: unknown template name: {name} "
                 "-- ignoring this template")
    return templates


def load_file(path: str, warn: Warn) -> dict[Kind, BounceTemplate]:
    """The templates with bounce_template_file ``path`` (the built-in ones when empty)."""
    if not path:
        return dict(DEFAULTS)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            text = fp.read()
    except OSError as exc:
        raise TemplateError(f"open {path}: {exc.strerror}") from None
    return load(text, path, warn)


def _split_nameval(line: str, origin: str, lineno: int) -> tuple[str, str]:
    stripped = line.lstrip(_SPACE)
    end = next((i for i, ch in enumerate(stripped) if ch in _SPACE + "="), len(stripped))
    rest = stripped[end:].lstrip(_SPACE)
    if not stripped or stripped[0] == "=":
        reason = "missing attribute name"
    elif not rest.startswith("="):
        reason = "missing '=' after attribute name"
    else:
        return stripped[:end], rest[1:].strip(_SPACE)
    raise TemplateError(f'{origin}, line {lineno}: {reason}: "{line}"')
