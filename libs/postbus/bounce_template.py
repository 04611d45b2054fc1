"""Delivery status notification templates in bounce(5) form (≈ bounce_template.c,
bounce_templates.c).

Postbus sends one kind of notice, the non-delivery report (the qmgr's
bounce, :mod:`qmgr.bounce`), so it has one template, :data:`FAILURE`:
Postfix 3.7's failure template less its ``Postmaster-Subject`` (Postbus
sends no postmaster copies). ``postbus postconf -t`` prints it and
``postconf -b`` expands it, as Postfix's do with theirs.

:func:`load` reads a template file as Postfix's bounce daemon does, with
its warnings and errors word for word; Postfix's other classes (delay,
success, verify) are recognised and reported as not sent by Postbus.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from postbus.config.conv import ConfigError
from postbus.config.main_cf import expand

__all__ = ["FAILURE", "POSTFIX_CLASSES", "BounceTemplate", "TemplateError", "load"]

#: Every class Postfix has, in the order it prints them.
POSTFIX_CLASSES = ("failure", "delay", "success", "verify")

_SPACE = " \t\n\v\f\r"
_HEADER = re.compile(r"([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # ≈ is_header(): a label, a colon
_TIME_PARAMETERS = ("delay_warning_time", "maximal_queue_lifetime")
_DIVISORS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}

Warn = Callable[[str], None]


class TemplateError(Exception):
    """A fatal template error, worded as Postfix's bounce daemon words it."""


@dataclass(frozen=True)
class BounceTemplate:
    """One notice template: pseudo-headers and the message text, unexpanded."""

    kind: str
    charset: str
    sender: str
    subject: str
    postmaster_subject: str | None
    text: tuple[str, ...]
    origin: str = "built-in"

    def dump(self) -> str:
        """The template in bounce(5) form (≈ bounce_template_dump() and its caller)."""
        lines = [f"{self.kind}_template = <<EOF", f"Charset: {self.charset}",
                 f"From: {self.sender}", f"Subject: {self.subject}"]
        if self.postmaster_subject is not None:
            lines.append(f"Postmaster-Subject: {self.postmaster_subject}")
        return "\n".join([*lines, "", *self.text, "EOF"]) + "\n"

    def expand(
        self, lookup: Callable[[str], str | None], warn: Warn = lambda text: None
    ) -> list[str]:
        """The message text with ``$name`` replaced (≈ bounce_template_expand()).

        ``lookup`` gives a parameter's value, fully expanded, or None;
        ``$delay_warning_time_hours`` and ``$maximal_queue_lifetime_days``
        (any unit from seconds to weeks) are that time in the unit.
        """
        lines = []
        undefined: list[str] = []

        def value_of(name: str) -> str | None:
            value = self._time_value(name, lookup)
            if value is None:
                value = lookup(name)
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

    def _time_value(self, name: str, lookup: Callable[[str], str | None]) -> str | None:
        from postbus.config.conv import parse_time

        for parameter in _TIME_PARAMETERS:
            if not name.startswith(parameter + "_"):
                continue
            suffix = name[len(parameter) + 1 :]
            if suffix not in _DIVISORS:
                raise TemplateError(f'{self.origin}: unrecognized suffix "{suffix}" '
                                    f'in parameter "{name}"')
            unit = "h" if parameter == "delay_warning_time" else "d"
            seconds = int(parse_time(lookup(parameter) or "0", unit))
            return str(seconds // _DIVISORS[suffix])
        return None

    def header_from(self, hostname: str) -> str:
        """The From: header value, the mailer-daemon address qualified."""
        return self.sender.replace("<MAILER-DAEMON>", f"<MAILER-DAEMON@{hostname}>")


FAILURE = BounceTemplate(
    kind="failure",
    charset="us-ascii",
    sender="Mail Delivery System <MAILER-DAEMON>",
    subject="Undelivered Mail Returned to Sender",
    postmaster_subject=None,
    text=(
        "This is the mail system at host $myhostname.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
        "",
        "                   The mail system",
    ),
)

#: Postbus's templates by class: what it sends.
DEFAULTS = {"failure": FAILURE}


def _parse(template: BounceTemplate, buffer: str, warn: Warn) -> BounceTemplate:
    """Headers and text of one template from a file (≈ bounce_template_parse_buffer());
    an unusable one is reported and the built-in one kept."""
    lines = buffer.split("\n")
    fields: dict[str, str | None] = {}
    at = 0

    def ignore(reason: str) -> BounceTemplate:
        warn(f"{origin}: {reason} in {template.kind} template -- ignoring this template")
        return template

    origin = template.origin
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
        elif key == "postmaster-subject" and template.kind in ("failure", "delay"):
            fields["postmaster_subject"] = value
        elif key == "postmaster-subject":
            return ignore(f'inapplicable "{label}" header label')
        else:
            return ignore(f'unknown "{label}" header label')
    while at < len(lines) and not lines[at].strip(_SPACE):
        at += 1
    if at == len(lines):
        return ignore("missing message text")
    text = lines[at:]
    charset = fields.get("charset") or template.charset
    if not all(line.isascii() for line in text) and charset.lower() == "us-ascii":
        warn(f"{origin}: 8-bit message text in {template.kind} template")
        warn("please specify a charset value other than us-ascii")
        warn("-- ignoring this template for now")
        return template
    return replace(template, text=tuple(text), **fields)  # type: ignore[arg-type]


def load(text: str, origin: str, warn: Warn) -> dict[str, BounceTemplate]:
    """Postbus's templates with those a bounce(5) file overrides (≈ bounce_templates_load()).

    Line numbers in messages count as Postfix's do (one more than the line).
    """
    templates = {kind: replace(t, origin=origin) for kind, t in DEFAULTS.items()}
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
        kind = name.removesuffix("_template") if name.endswith("_template") else None
        if kind in templates:
            templates[kind] = _parse(templates[kind], value, warn)
        elif kind in POSTFIX_CLASSES:
            warn(f"{origin}, line {lineno}: Postbus sends no {kind} notices "
                 "-- ignoring this template")
        else:
            warn(f"{origin}, line {lineno}: unknown template name: {name} "
                 "-- ignoring this template")
    return templates


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
