"""Nothing configured is ignored: a parameter Postbus does not support yet stops the
load (and so every role's start and every reload), naming file, line and parameter;
``postbus_unsupported_parameters = warn`` turns that into one warning each."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.config.support import UnsupportedParameter
from postbus.service import ConfigWatcher, ServiceContext

MAIN = "myhostname = mx.postbus.test\n"

#: Popular Postfix features Postbus does not have yet: (main.cf lines, refused name).
NOT_YET = [
    ("smtpd_milters = inet:127.0.0.1:8891\nsmtpd_milter_maps = cidr:/etc/postbus/m.cidr\n",
     "smtpd_milter_maps"),
    ("milter_header_checks = regexp:/etc/postbus/milter_hc\n", "milter_header_checks"),
    ("sender_bcc_maps = hash:/etc/postbus/sender_bcc\n", "sender_bcc_maps"),
    ("undisclosed_recipients_header = To: undisclosed-recipients:;\n",
     "undisclosed_recipients_header"),
    ("smtpd_tls_security_level = may\nsmtpd_tls_dcert_file = /etc/ssl/dsa.pem\n",
     "smtpd_tls_dcert_file"),
    ("smtpd_tls_session_cache_database = btree:/var/lib/postfix/smtpd_scache\n",
     "smtpd_tls_session_cache_database"),
    ("smtpd_noop_commands = foo\n", "smtpd_noop_commands"),
    ("smtpd_client_port_logging = yes\n", "smtpd_client_port_logging"),
    ("smtp_sasl_path = /etc/sasl2\n", "smtp_sasl_path"),
    ("smtpd_reject_footer = call us\n", "smtpd_reject_footer"),
    ("always_bcc = archive@example.com\n", "always_bcc"),
    ("soft_bounce = yes\n", "soft_bounce"),
    ("hopcount_limit = 20\n", "hopcount_limit"),
    ("relay_delivery_slot_cost = 2\n", "relay_delivery_slot_cost"),
    ("default_delivery_slot_cost = 3\n", "default_delivery_slot_cost"),
]


def load(main_cf: str, master_cf: str = "", **kw: str) -> Config:
    return Config.from_text(MAIN + main_cf, master_cf, check_support=True, **kw)


@pytest.mark.parametrize(("lines", "name"), NOT_YET, ids=[n for _, n in NOT_YET])
def test_not_yet_parameter_stops_the_load(lines: str, name: str) -> None:
    with pytest.raises(UnsupportedParameter) as info:
        load(lines)
    line = 2 + lines.split("\n").index(next(x for x in lines.split("\n") if x.startswith(name)))
    assert str(info.value) == (
        f"/etc/postbus/main.cf, line {line}: parameter {name} is not supported yet by Postbus"
    )


@pytest.mark.parametrize(("lines", "name"), NOT_YET, ids=[n for _, n in NOT_YET])
def test_warn_switch_lets_it_through_once(lines: str, name: str) -> None:
    cfg = load(lines + "postbus_unsupported_parameters = warn\n")
    assert name in [problem.parameter for problem in cfg.unsupported]
    names = [problem.parameter for problem in cfg.unsupported]
    assert len(names) == len(set(names))


def test_tools_that_handle_no_mail_opt_out(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("always_bcc = x@y.test\n")
    assert Config.load(tmp_path, check_support=False).get("always_bcc") == "x@y.test"
    with pytest.raises(UnsupportedParameter, match="parameter always_bcc is not"):
        Config.load(tmp_path)


@pytest.mark.parametrize("lines", [
    "smtpd_tls_security_level =\n",  # the empty default, spelled out
    "smtpd_tls_security_level = none\n",
    # the stock Debian main.cf's server TLS: a Postfix admin's first start
    "smtpd_tls_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem\n"
    "smtpd_tls_key_file=/etc/ssl/private/ssl-cert-snakeoil.key\n"
    "smtpd_tls_security_level=may\n",
    "smtpd_tls_wrappermode = yes\nsmtpd_tls_loglevel = 1\nsmtpd_tls_received_header = yes\n"
    "smtpd_tls_ask_ccert = yes\nsmtpd_tls_CAfile = /etc/ssl/ca.pem\n"
    "smtpd_tls_protocols = !SSLv2, !SSLv3\nsmtpd_tls_mandatory_ciphers = high\n",
    "smtpd_discard_ehlo_keywords = chunking\nfast_flush_domains = example.com\n"
    "smtpd_etrn_restrictions = permit_mynetworks, reject\n",
    "header_checks =\nbody_checks = $empty\nempty =\n",  # expands to the default
    "mime_header_checks = $header_checks\n",  # the default itself
    "smtpd_tls_key_file = $smtpd_tls_cert_file\n",
    "masquerade_classes = envelope_sender header_sender header_recipient\n",  # a list, no commas
    "delay_warning_time = 0\n",  # 0h
    "bounce_template_file =\nsmtpd_sasl_type = cyrus\n",
    "compatibility_level = 2\nrelay_domains =\n",  # the level-2 default
    "compatibility_level = 0\nrelay_domains = $mydestination\n",  # the level-0 default
    "smtpd_relay_before_recipient_restrictions = yes\n",
    "biff = no\nmailbox_size_limit = 0\n",  # honoured: Postbus does exactly that
    "my_checks = regexp:/x\nfoo = $my_checks $header_checks\n",  # references set nothing
    "queue_directory = /var/spool/elsewhere\nsetgid_group = mail\nreadme_directory = no\n",
    "smtp_tls_security_level = encrypt\nsmtp_dns_support_level = enabled\n",
    "local_header_rewrite_clients = permit_mynetworks, static:all\n",
    # cleanup's address rewriting and the resolver's relocated users (issue 10)
    "canonical_maps = hash:/c\nsender_canonical_maps = hash:/s\nvirtual_alias_maps = hash:/v\n"
    "masquerade_domains = !sub.example.com example.com\nrelocated_maps = hash:/r\n",
    "propagate_unmatched_extensions = canonical\nremote_header_rewrite_domain = domain.invalid\n",
    "propagate_unmatched_extensions = canonical, virtual, alias, forward, include\n",
])
def test_defaults_and_harmless_settings_pass(lines: str) -> None:
    assert load(lines).unsupported == []


def test_dane_and_dnssec_are_accepted() -> None:
    cfg = ("smtp_tls_security_level = dane\nsmtp_dns_support_level = dnssec\n"
           "smtp_tls_dane_insecure_mx_policy = may\n")
    assert load(cfg).unsupported == []
    assert load("smtp_tls_security_level = dane-only\n").unsupported == []


@pytest.mark.parametrize(("lines", "text"), [
    ("smtp_tls_security_level = fingerprint\n",
     "line 2: parameter smtp_tls_security_level: fingerprint is not supported yet by Postbus"),
    ("lmtp_tls_security_level = dane\n",
     "line 2: parameter lmtp_tls_security_level: dane is not supported yet by Postbus"),
    ("smtpd_tls_security_level = dane\n",
     "line 2: parameter smtpd_tls_security_level: dane is not supported yet by Postbus"),
    ("smtpd_tls_loglevel = 2\n",
     "line 2: parameter smtpd_tls_loglevel: 2 is not supported yet by Postbus"),
    ("smtp_dns_support_level = dnssec-ish\n",
     "line 2: parameter smtp_dns_support_level: dnssec-ish is not supported yet by Postbus"),
    ("local_header_rewrite_clients = permit_mynetworks, check_address_map hash:/x\n",
     "parameter local_header_rewrite_clients: check_address_map is not supported yet"),
])
def test_values_postbus_does_not_honour_are_refused(lines: str, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        load(lines)


def test_master_cf_override_names_master_cf_and_its_line() -> None:
    master = (
        "smtp inet n - n - - smtpd\n"
        "submission inet n - n - - smtpd\n"
        "  -o smtpd_reject_footer=call-us\n"
        "  -o syslog_name=postfix/submission\n"
    )
    load("", master, service="smtp/inet")  # another service's -o is not smtp's problem
    expected = ("/etc/postbus/master.cf, line 2: parameter smtpd_reject_footer "
                "is not supported yet by Postbus")
    with pytest.raises(UnsupportedParameter) as info:
        load("", master, service="submission/inet")
    assert str(info.value) == expected
    with pytest.raises(UnsupportedParameter) as info:  # postbus start answers for every line
        load("", master)
    assert str(info.value) == expected


def test_command_line_override_is_checked() -> None:
    with pytest.raises(UnsupportedParameter, match=r"^override: parameter always_bcc is"):
        load("", overrides={"always_bcc": "x@y.test"})


def test_bad_switch_value() -> None:
    with pytest.raises(ConfigError, match='parameter postbus_unsupported_parameters: bad value'):
        load("postbus_unsupported_parameters = ignore\n")


def test_reload_keeps_the_last_good_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "main.cf").write_text(MAIN)
    (tmp_path / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    ctx = ServiceContext(cfg=Config.load(tmp_path, service="qmgr"), program="qmgr",
                         service="qmgr")
    good = ctx.cfg
    (tmp_path / "main.cf").write_text(MAIN + "always_bcc = x@y.test\n")
    with caplog.at_level(logging.ERROR):
        ConfigWatcher(ctx, str(tmp_path), {}).reload()
    assert ctx.cfg is good
    assert (f"{tmp_path}/main.cf, line 2: parameter always_bcc is not supported yet by "
            "Postbus; keeping the last good configuration") in caplog.messages
