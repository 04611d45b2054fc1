"""Every parameter's status matches the code: implemented means some role reads it,
and whatever a role reads is implemented, not applicable, or listed as read only
in part (PARTLY, and so refused when set).

The code is scanned statically for parameter names as string literals in
libs/ and services/, leaving out the modules whose job is to know every
name (the registry, the status table, postconf, the loader's derivation
table, the support check). Names read another way are allowed explicitly,
each with the reason.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from postbus.param_status import (
    HONOURED_VALUES,
    IMPLEMENTED,
    NOT_APPLICABLE,
    ONLY_VALUES,
    PARTLY,
    status,
)
from postbus.params import PARAMS

ROOT = Path(__file__).resolve().parents[3]
NOT_SCANNED = {
    "libs/postbus/params.py",  # defines every name
    "libs/postbus/params_postfix.py",
    "libs/postbus/param_status.py",
    # postconf (postconf.py, postconf_names.py, postconf_show.py, ...) shows every name,
    # honours none
    *(p.relative_to(ROOT).as_posix() for p in ROOT.glob("libs/postbus/cli/postconf*.py")),
    "libs/postbus/config/loader.py",  # TRANSPORT_SUFFIXES names the bases of derived names
    "libs/postbus/config/support.py",
}

#: Implemented parameters read without their name as a literal, and how.
INDIRECT = {
    "config_directory": "the loader sets it to the directory it reads (Config.config_dir)",
    "compatibility_level": "the ${{$compatibility_level} <level {N} ? ...} defaults read it",
    "stress": "the ${stress?{...}:{...}} defaults read it",
    "multi_instance_name": "syslog_name's default reads it",
    "mynetworks_style": "params.host_default() derives mynetworks from it",
    "postbus_unsupported_parameters": "config/support.py reads it (support.SWITCH)",
    "smtp_host_lookup": 'delivery_smtp/agent.py reads f"{prefix}_host_lookup"',
    # qmgr/destinations.py Limits.of reads f"{transport}_{suffix}", whose default is these
    **{name: "qmgr/destinations.py reads the per-transport name, defaulting to it"
       for name in (
        "initial_destination_concurrency", "default_destination_concurrency_limit",
        "default_destination_recipient_limit", "default_destination_rate_delay",
        "default_destination_concurrency_positive_feedback",
        "default_destination_concurrency_negative_feedback",
        "default_destination_concurrency_failed_cohort_limit")},
    "lmtp_host_lookup": 'delivery_smtp/agent.py reads f"{prefix}_host_lookup"',
    # delivery_smtp/proto.py Settings.from_config: lmtp_<x> for each smtp_<x> Postfix twins
    **{name: "delivery_smtp/proto.py reads the lmtp_ twin of its smtp_ name" for name in (
        "lmtp_connect_timeout", "lmtp_lhlo_timeout", "lmtp_mail_timeout", "lmtp_rcpt_timeout",
        "lmtp_data_init_timeout", "lmtp_data_xfer_timeout", "lmtp_data_done_timeout",
        "lmtp_rset_timeout", "lmtp_quit_timeout", "lmtp_starttls_timeout", "lmtp_lhlo_name",
        "lmtp_tls_security_level", "lmtp_line_length_limit",
        "lmtp_send_xforward_command", "lmtp_xforward_timeout",
    )},
    # postbus/cleanup/checks.py ContentChecks reads prefix + "header_checks" and the rest
    **{name: 'cleanup/checks.py reads f"{prefix}{name}" for the delivery agents (postbus.hbc)'
       for name in (
        "smtp_header_checks", "smtp_mime_header_checks", "smtp_nested_header_checks",
        "smtp_body_checks", "lmtp_header_checks", "lmtp_mime_header_checks",
        "lmtp_nested_header_checks", "lmtp_body_checks")},
}

#: Literals that spell a parameter name but are something else.
NOT_READS: dict[str, str] = {}


@cache
def literals() -> dict[str, set[str]]:
    """Parameter names that occur as string literals, and where."""
    found: dict[str, set[str]] = {}
    files = [*ROOT.glob("libs/postbus/**/*.py"), *ROOT.glob("services/*/*/**/*.py")]
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in NOT_SCANNED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            name = node.value if isinstance(node, ast.Constant) else None
            if isinstance(name, str) and name in PARAMS and name not in NOT_READS:
                found.setdefault(name, set()).add(rel)
    return found


def test_the_scan_sees_the_roles() -> None:
    read = literals()
    assert "services/ingress-smtpd/ingress_smtpd/server.py" in read["message_size_limit"]
    assert "services/qmgr/qmgr/defer.py" in read["minimal_backoff_time"]
    assert len(read) > 120


def test_implemented_parameters_are_read_by_code() -> None:
    unread = sorted(n for n in IMPLEMENTED if n not in literals() and n not in INDIRECT)
    assert unread == [], "marked implemented, but no code reads them"


def test_parameters_the_code_reads_have_a_status_saying_so() -> None:
    wrong = {
        name: sorted(where) for name, where in literals().items()
        if status(name) == "not_yet" and name not in PARTLY
    }
    assert wrong == {}, "read by a role, but not_yet: mark implemented or list in PARTLY"


def test_partly_read_parameters_are_read_and_not_yet() -> None:
    for name in PARTLY:
        assert name in literals(), name
        assert status(name) == "not_yet", name


def test_tables_name_registry_parameters_and_agree() -> None:
    for table in (IMPLEMENTED, NOT_APPLICABLE, PARTLY, ONLY_VALUES, HONOURED_VALUES):
        assert set(table) <= set(PARAMS), set(table) - set(PARAMS)
    assert not set(IMPLEMENTED) & set(NOT_APPLICABLE)
    assert set(ONLY_VALUES) <= IMPLEMENTED
    assert not set(HONOURED_VALUES) & (IMPLEMENTED | set(NOT_APPLICABLE))
    assert set(INDIRECT) <= IMPLEMENTED
    assert all(why for why in NOT_APPLICABLE.values())
    assert {status(n) for n in PARAMS} == {"implemented", "not_applicable", "not_yet"}


def test_honoured_values_are_not_the_default() -> None:
    """A value listed as honoured that is the default would hide nothing: keep the table lean."""
    for name, values in HONOURED_VALUES.items():
        assert PARAMS[name].default.lower() not in values, name
