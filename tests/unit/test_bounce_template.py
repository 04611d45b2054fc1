"""Notice templates in bounce(5) form: the one the qmgr sends, and template files.

What ``postbus postconf -t`` prints is what the qmgr puts in a non-delivery
report; file parsing is compared with Postfix's in
tests/unit/cli/test_postconf_diff.py.
"""

from __future__ import annotations

import pytest

from postbus.bounce_template import FAILURE, TemplateError, load
from qmgr.bounce_template import TEMPLATES


def test_postconf_shows_the_failure_template_the_qmgr_sends() -> None:
    sent = TEMPLATES["failure"]
    assert (FAILURE.subject, FAILURE.charset) == (sent.subject, sent.charset)
    assert FAILURE.text == sent.text
    assert FAILURE.dump().startswith(
        "failure_template = <<EOF\nCharset: us-ascii\n"
        "From: Mail Delivery System <MAILER-DAEMON>\n"
        "Subject: Undelivered Mail Returned to Sender\n\n"
        "This is the mail system at host $myhostname.\n"
    )
    assert FAILURE.dump().endswith("\n                   The mail system\nEOF\n")


def test_a_file_overrides_the_failure_template_and_others_are_reported() -> None:
    warnings: list[str] = []
    text = ("# comment\n\nfailure_template = <<EOT\nSubject: Oops\nFrom: pm <postmaster>\n\n"
            "Sorry at $myhostname.\nEOT\ndelay_template = <<EOF\nx\nEOF\nnot_template = 1\n")
    got = load(text, "/f", warnings.append)
    assert got["failure"].subject == "Oops" and got["failure"].sender == "pm <postmaster>"
    assert got["failure"].text == ("Sorry at $myhostname.",)
    assert warnings == [
        "/f, line 12: Postbus sends no delay notices -- ignoring this template",
        "/f, line 13: unknown template name: not_template -- ignoring this template",
    ]
    assert got["failure"].expand({"myhostname": "h"}.get) == ["Sorry at h."]


@pytest.mark.parametrize(
    ("buffer", "warning"),
    [
        ("Subject:\n\nx", 'empty "Subject" header value'),
        ("X-Thing: y\n\nx", 'unknown "X-Thing" header label'),
        ("Subject: y\n\n", "missing message text"),
    ],
)
def test_an_unusable_template_is_reported_and_the_built_in_one_kept(
    buffer: str, warning: str
) -> None:
    warnings: list[str] = []
    got = load(f"failure_template = <<EOF\n{buffer}\nEOF\n", "/f", warnings.append)
    assert got["failure"].text == FAILURE.text
    assert warnings == [f"/f: {warning} in failure template -- ignoring this template"]


def test_expansion_errors_name_the_line() -> None:
    template = load("failure_template = <<EOF\nAt $nosuch.\nEOF\n", "/f", print)["failure"]
    with pytest.raises(TemplateError, match=r"^/f: undefined \$name in failure template: At "):
        template.expand({}.get)
    days = load("failure_template = <<EOF\n$maximal_queue_lifetime_days d, "
                "$delay_warning_time_minutes m\nEOF\n", "/f", print)["failure"]
    lookup = {"maximal_queue_lifetime": "5d", "delay_warning_time": "2"}.get
    assert days.expand(lookup) == ["5 d, 120 m"]
