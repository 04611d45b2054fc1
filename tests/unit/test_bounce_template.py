"""Notice templates in bounce(5) form: the four built-in ones, template files, expansion.

The built-in texts and file parsing are compared with Postfix's own in
tests/unit/cli/test_postconf_diff.py (``postconf -t``/``-b``); what the qmgr
sends with them, in tests/integration/test_notices_vs_postfix.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from postbus.bounce_template import DEFAULTS, KINDS, TemplateError, load, load_file


def test_four_built_in_templates_with_postmaster_subjects_for_failure_and_delay() -> None:
    assert tuple(DEFAULTS) == KINDS == ("failure", "delay", "success", "verify")
    assert {k: (t.subject, t.postmaster_subject) for k, t in DEFAULTS.items()} == {
        "failure": ("Undelivered Mail Returned to Sender", "Postmaster Copy: Undelivered Mail"),
        "delay": ("Delayed Mail (still being retried)", "Postmaster Warning: Delayed Mail"),
        "success": ("Successful Mail Delivery Report", None),
        "verify": ("Mail Delivery Status Report", None),
    }
    assert DEFAULTS["failure"].dump().startswith(
        "failure_template = <<EOF\nCharset: us-ascii\n"
        "From: Mail Delivery System <MAILER-DAEMON>\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Postmaster-Subject: Postmaster Copy: Undelivered Mail\n\n"
        "This is the mail system at host $myhostname.\n"
    )
    assert "Postmaster-Subject" not in DEFAULTS["success"].dump()
    assert DEFAULTS["verify"].dump().endswith("\n                   The mail system\nEOF\n")


def test_a_file_overrides_some_templates_and_unknown_names_are_reported() -> None:
    warnings: list[str] = []
    text = ("# comment\n\nfailure_template = <<EOT\nSubject: Oops\nFrom: pm <postmaster>\n\n"
            "Sorry at $myhostname.\nEOT\ndelay_template = <<EOF\nStill at it.\nEOF\n"
            "not_template = 1\n")
    got = load(text, "/f", warnings.append)
    failure, delay = got["failure"], got["delay"]
    assert (failure.subject, failure.sender, failure.text) == (
        "Oops", "pm <postmaster>", ("Sorry at $myhostname.",))
    assert failure.postmaster_subject == "Postmaster Copy: Undelivered Mail"  # kept
    assert (delay.subject, delay.text, delay.origin) == (
        "Delayed Mail (still being retried)", ("Still at it.",), "/f")
    assert got["success"] == DEFAULTS["success"] and got["success"].origin == "[built-in]"
    assert warnings == ["/f, line 13: unknown template name: not_template "
                        "-- ignoring this template"]
    assert failure.expand({"myhostname": "h"}.get) == ["Sorry at h."]


@pytest.mark.parametrize(
    ("kind", "buffer", "warning"),
    [
        ("failure", "Subject:\n\nx", 'empty "Subject" header value'),
        ("delay", "X-Thing: y\n\nx", 'unknown "X-Thing" header label'),
        ("failure", "Subject: y\n\n", "missing message text"),
        ("success", "Postmaster-Subject: pm\n\nx",
         'inapplicable "Postmaster-Subject" header label'),
        ("verify", "Subject: T\u00e9\n\nx", 'non-ASCII "Subject" header value'),
    ],
)
def test_an_unusable_template_is_reported_and_the_built_in_one_kept(
    kind: str, buffer: str, warning: str
) -> None:
    warnings: list[str] = []
    got = load(f"{kind}_template = <<EOF\n{buffer}\nEOF\n", "/f", warnings.append)
    assert got == DEFAULTS
    assert warnings == [f"/f: {warning} in {kind} template -- ignoring this template"]


def test_8bit_text_needs_a_charset_and_makes_the_template_8bit() -> None:
    warnings: list[str] = []
    plain = load("failure_template = <<EOF\n\nT\u00e9xt\nEOF\n", "/f", warnings.append)
    assert plain["failure"] == DEFAULTS["failure"]
    assert warnings == ["/f: 8-bit message text in failure template",
                        "please specify a charset value other than us-ascii",
                        "-- ignoring this template for now"]
    utf8 = load("failure_template = <<EOF\nCharset: utf-8\n\nT\u00e9xt\nEOF\n", "/f", print)
    assert (utf8["failure"].charset, utf8["failure"].encoding) == ("utf-8", "8bit")
    assert DEFAULTS["failure"].encoding == "7bit"


def test_expansion_errors_name_the_origin_and_line() -> None:
    template = load("failure_template = <<EOF\nAt $nosuch.\nEOF\n", "/f", print)["failure"]
    with pytest.raises(TemplateError, match=r"^/f: undefined \$name in failure template: At "):
        template.expand({}.get)
    unit = load("delay_template = <<EOF\n$delay_warning_time_fortnights\nEOF\n", "/f",
                print)["delay"]
    with pytest.raises(TemplateError, match=r'^/f: unrecognized suffix "fortnights" in '
                                            r'parameter "delay_warning_time_fortnights"$'):
        unit.expand({"delay_warning_time": "4h"}.get)


def test_time_values_in_any_unit_with_postfix_warnings() -> None:
    days = load("failure_template = <<EOF\n$maximal_queue_lifetime_days d, "
                "$delay_warning_time_minutes m\nEOF\n", "/f", print)["failure"]
    lookup = {"maximal_queue_lifetime": "5d", "delay_warning_time": "2"}.get
    assert days.expand(lookup) == ["5 d, 120 m"]
    warnings: list[str] = []
    assert DEFAULTS["delay"].expand({"myhostname": "h", "delay_warning_time": "30m",
                                     "maximal_queue_lifetime": "5d"}.get,
                                    warnings.append)[6] == (
        "Your message could not be delivered for more than 0 hour(s).")
    assert warnings == [
        '[built-in]: zero result in delay template conversion of parameter '
        '"delay_warning_time_hours"',
        'please reduce time unit "hours" of "delay_warning_time_hours" in delay template',
        "for instructions see the bounce(5) manual",
    ]


def test_hostname_shown_in_utf8_with_smtputf8() -> None:
    lookup = {"myhostname": "xn--bcher-kva.example"}.get
    assert DEFAULTS["verify"].expand(lookup, utf8=True)[0] == (
        "This is the mail system at host b\u00fccher.example.")
    assert DEFAULTS["verify"].expand(lookup)[0] == (
        "This is the mail system at host xn--bcher-kva.example.")


def test_load_file(tmp_path: Path) -> None:
    assert load_file("", print) == DEFAULTS
    with pytest.raises(TemplateError, match=f"^open {tmp_path}/none: No such file or directory$"):
        load_file(str(tmp_path / "none"), print)
    path = tmp_path / "t.cf"
    path.write_text("verify_template = <<EOF\nSubject: Report\n\nHere.\nEOF\n")
    got = load_file(str(path), print)["verify"]
    assert (got.subject, got.text, got.origin) == ("Report", ("Here.",), str(path))
