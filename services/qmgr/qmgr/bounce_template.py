"""The words of delivery status notifications (≈ bounce_templates.c, bounce_template.c).

Four templates, Postfix's built-in texts to the letter: ``failure`` (mail
returned), ``delay`` (still being retried), ``success`` (delivered,
relayed or expanded) and ``verify`` (a requested delivery report). A
template is expanded line by line: ``$myhostname`` and ``$mydomain`` (in
UTF-8 when smtputf8_enable), ``$delay_warning_time_<unit>`` and
``$maximal_queue_lifetime_<unit>`` (the value in seconds, minutes, hours,
days or weeks, rounded down), and any other main.cf parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from postbus.config.main_cf import expand

log = logging.getLogger("postbus.bounce")

Kind = Literal["failure", "delay", "success", "verify"]

#: Postfix's From: in standard header_from_format (qualified when composed).
MAIL_DAEMON = "MAILER-DAEMON"

_SIGNATURE = "                   The mail system"
_ASK_POSTMASTER = (
    "For further assistance, please send mail to postmaster.",
    "",
    "If you do so, please include this problem report. You can",
    "delete your own text from the attached returned message.",
)


@dataclass(frozen=True)
class Template:
    """One notification's subject lines and boiler-plate text."""

    kind: Kind
    subject: str
    postmaster_subject: str  # "" when the kind has no postmaster copy
    text: tuple[str, ...]
    charset: str = "us-ascii"
    encoding: str = "7bit"  # 8bit when the text is not ASCII


TEMPLATES: dict[Kind, Template] = {
    "failure": Template(
        "failure",
        "Undelivered Mail Returned to Sender",
        "Postmaster Copy: Undelivered Mail",
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
    "delay": Template(
        "delay",
        "Delayed Mail (still being retried)",
        "Postmaster Warning: Delayed Mail",
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
    "success": Template(
        "success",
        "Successful Mail Delivery Report",
        "",
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
    "verify": Template(
        "verify",
        "Mail Delivery Status Report",
        "",
        (
            "This is the mail system at host $myhostname.",
            "",
            "Enclosed is the mail delivery report that you requested.",
            "",
            _SIGNATURE,
        ),
    ),
}

_DIVISORS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
_TIME_PARAMETERS = ("delay_warning_time", "maximal_queue_lifetime")


class TemplateError(ValueError):
    """A template refers to something that has no value."""


def time_value(kind: Kind, key: str, seconds: dict[str, int]) -> str | None:
    """``$delay_warning_time_hours`` and friends (≈ bounce_template_lookup()): the
    parameter's seconds divided by the unit, rounded down, with Postfix's warnings
    when the unit is too small or too large for the value."""
    for name in _TIME_PARAMETERS:
        if not key.startswith(name + "_"):
            continue
        suffix = key[len(name) + 1 :]
        divisor = _DIVISORS.get(suffix)
        if divisor is None:
            raise TemplateError(f'unrecognized suffix "{suffix}" in parameter "{key}"')
        value = seconds[name]
        result = value // divisor
        if result > 999 and divisor < 86400:
            log.warning('[built-in]: excessive result "%d" in %s template conversion of '
                        'parameter "%s"', result, kind, key)
            log.warning('please increase time unit "%s" of "%s" in %s template',
                        suffix, key, kind)
            log.warning("for instructions see the bounce(5) manual")
        elif result == 0 and value and divisor > 1:
            log.warning('[built-in]: zero result in %s template conversion of parameter "%s"',
                        kind, key)
            log.warning('please reduce time unit "%s" of "%s" in %s template', suffix, key, kind)
            log.warning("for instructions see the bounce(5) manual")
        return str(result)
    return None


def to_utf8(domain: str) -> str:
    """An IDNA (``xn--``) domain for presentation, as midna_domain_to_utf8()."""
    try:
        return domain.encode("ascii").decode("idna") if domain.isascii() else domain
    except UnicodeError:
        return domain


def expand_text(
    template: Template, lookup: Callable[[str], str | None], seconds: dict[str, int],
    utf8: bool,
) -> list[str]:
    """The template's text with every ``$name`` replaced (≈ bounce_template_expand())."""

    def value(key: str) -> str | None:
        timed = time_value(template.kind, key, seconds)
        if timed is not None:
            return timed
        found = lookup(key)
        if found is not None and utf8 and key in ("myhostname", "mydomain"):
            return to_utf8(found)
        return found

    return [expand(line, value, recursive=False) for line in template.text]
