"""Config: layers, lazy expansion, typed accessors and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.params import PARAMS

MASTER = """\
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o { smtpd_recipient_restrictions = permit_sasl_authenticated, reject }
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
bad       unix  -       -       y       -       -       smtp
        -o smtp_connect_timeout=soon
"""

MAIN = """\
myhostname = mx.example.com
mydomain = example.com
mydestination = $myhostname, localhost.$mydomain
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
my_helper = unused text
"""


def cfg(
    main: str = MAIN,
    *,
    service: str | None = None,
    overrides: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    return Config.from_text(main, MASTER, service=service, overrides=overrides, environ=environ)


def test_defaults_and_main_cf() -> None:
    c = cfg()
    assert c.raw("myorigin") == "$myhostname"
    assert c.get("myorigin") == "mx.example.com"
    assert c.list("mydestination") == ["mx.example.com", "localhost.example.com"]
    assert c.size("message_size_limit") == 10240000
    assert c.int("smtpd_recipient_limit") == 1000
    assert c.bool("smtpd_helo_required") is False
    assert c.time("maximal_queue_lifetime") == 5 * 86400
    assert c.time("smtpd_timeout") == 300  # ${stress?{10}:{300}}s
    assert c.get("postbus_nats_url") == "nats://127.0.0.1:4222"
    assert c.get("postbus_nats_dir") == "/var/lib/postfix/nats"
    assert c.get("config_directory") == "/etc/postbus"
    assert c.config_dir == Path("/etc/postbus")
    assert c.main_cf_names() == [
        "myhostname", "mydomain", "mydestination", "smtpd_recipient_restrictions", "my_helper",
    ]
    assert c.is_set("mydomain") and not c.is_set("myorigin")


def test_time_uses_the_parameters_default_unit() -> None:
    c = cfg("maximal_queue_lifetime = 3\ndelay_warning_time = 4\nsmtpd_timeout = 60\n")
    assert c.time("maximal_queue_lifetime") == 3 * 86400
    assert c.time("delay_warning_time") == 4 * 3600
    assert c.time("smtpd_timeout") == 60


def test_compatibility_level_drives_defaults() -> None:
    assert cfg("").get("smtputf8_enable") == "no"
    assert cfg("").list("relay_domains") == cfg("").list("mydestination")
    new = cfg("compatibility_level = 3.6\n")
    assert new.bool("smtputf8_enable") is True
    assert new.get("relay_domains") == ""
    assert new.get("mynetworks_style") == "host"
    assert new.get("mynetworks") == "127.0.0.0/8 [::1]/128"
    assert new.get("smtp_tls_fingerprint_digest") == "sha256"


def test_values_are_evaluated_lazily() -> None:
    c = cfg(overrides={"myhostname": "other.example.net"})
    assert c.get("mydestination") == "other.example.net, localhost.example.com"
    assert c.get("myorigin") == "other.example.net"


def test_host_dependent_defaults_follow_settings() -> None:
    c = cfg("myhostname = a.b.example\n")
    assert c.get("mydomain") == "b.example"
    assert cfg("myhostname = bare\n").get("mydomain") == "localdomain"


@pytest.mark.parametrize(
    ("service", "syslog_name", "level"),
    [
        (None, "postbus", ""),
        ("smtp", "postbus", ""),
        ("submission", "postfix/submission", "encrypt"),
        ("relay", "postfix/relay", ""),
        ("smtp/unix", "postbus", ""),
    ],
)
def test_master_overrides_only_for_their_service(
    service: str | None, syslog_name: str, level: str
) -> None:
    c = cfg(service=service)
    assert c.get("syslog_name") == syslog_name
    assert c.get("smtpd_tls_security_level") == level


def test_precedence_of_layers() -> None:
    c = cfg(
        "smtpd_tls_security_level = may\n",
        service="submission",
        overrides={"syslog_name": "explicit"},
    )
    assert c.get("syslog_name") == "explicit"  # explicit > master.cf -o
    assert c.get("smtpd_tls_security_level") == "encrypt"  # master.cf -o > main.cf
    assert c.list("smtpd_recipient_restrictions") == ["permit_sasl_authenticated", "reject"]
    assert c.origin("smtpd_tls_security_level") == ("/etc/postbus/master.cf", 2)
    assert cfg("smtpd_tls_security_level = may\n").get("smtpd_tls_security_level") == "may"


def test_unknown_service() -> None:
    with pytest.raises(ConfigError, match=r'no master\.cf service "nope"'):
        cfg(service="nope")


def test_master_entries() -> None:
    c = cfg()
    assert [e.name for e in c.master][:3] == ["smtp/inet", "submission/inet", "smtp/unix"]
    entry = c.master_entry("smtp/unix")
    assert entry is not None and entry.command == "smtp"
    assert c.master_entry("nope") is None


def test_environment_fills_unset_postbus_urls() -> None:
    env = {"POSTBUS_NATS_URL": "nats://nats:4222", "POSTBUS_REDIS_URL": "redis://redis/1"}
    c = cfg("", environ=env)
    assert c.get("postbus_nats_url") == "nats://nats:4222"
    assert c.get("postbus_redis_url") == "redis://redis/1"
    assert c.is_set("postbus_nats_url")
    c = cfg("postbus_nats_url = nats://main-cf:4222\n", environ=env)
    assert c.get("postbus_nats_url") == "nats://main-cf:4222"


def test_user_defined_names() -> None:
    c = cfg(MAIN + "mua_restrictions = permit_sasl_authenticated, reject\n"
            "smtpd_client_restrictions = $mua_restrictions\n")
    assert c.unknown_names == ["my_helper", "mua_restrictions"]
    assert c.unused_names() == ["my_helper"]
    assert c.list("smtpd_client_restrictions") == ["permit_sasl_authenticated", "reject"]
    assert c.get("my_helper") == "unused text"
    with pytest.raises(KeyError):
        c.raw("never_defined_anywhere")


def test_per_transport_parameters() -> None:
    c = cfg("default_destination_concurrency_limit = 7\nslow_destination_rate_delay = 1m\n")
    assert c.int("mytransport_destination_concurrency_limit") == 7
    assert c.int("smtp_destination_concurrency_limit") == 7
    assert c.time("slow_destination_rate_delay") == 60
    assert c.int("local_destination_concurrency_limit") == 2


@pytest.mark.parametrize(
    ("main", "line", "parameter", "reason"),
    [
        ("message_size_limit = 10M\n", 2, "message_size_limit", "bad numerical"),
        ("smtpd_helo_required = maybe\n", 2, "smtpd_helo_required", "bad boolean"),
        ("minimal_backoff_time = 5x\n", 2, "minimal_backoff_time", "bad time unit"),
        ("minimal_backoff_time = 0s\n", 2, "minimal_backoff_time", "must be >= 1"),
        ("relay_domains_reject_code = 200\n", 2, "relay_domains_reject_code", ">= 400"),
        ("postbus_metrics_port = 70000\n", 2, "postbus_metrics_port", "<= 65535"),
        ("myorigin = $mydomain\nmydomain = $myorigin\n", 2, "myorigin", "loop"),
        ("relayhost = ${mail_name\n", 2, "relayhost", "truncated macro reference"),
        ("x = y\ndefault_destination_recipient_limit = lots\n", 3,
         "default_destination_recipient_limit", "bad numerical"),
    ],
)
def test_bad_values_name_file_line_and_parameter(
    main: str, line: int, parameter: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        cfg("# comment\n" + main)
    message = str(info.value)
    assert message.startswith(f"/etc/postbus/main.cf, line {line}: parameter {parameter}: ")
    assert reason in message


def test_bad_master_override_names_master_cf() -> None:
    with pytest.raises(ConfigError) as info:
        cfg(service="bad")
    assert str(info.value).startswith(
        "/etc/postbus/master.cf, line 9: parameter smtp_connect_timeout: bad time"
    )
    cfg(service="smtp")  # the bad -o belongs to another service only


def test_bad_explicit_override() -> None:
    with pytest.raises(ConfigError, match=r"^override: parameter smtpd_timeout: "):
        cfg(overrides={"smtpd_timeout": "forever"})


def test_load_from_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "main.cf").write_text(MAIN)
    (tmp_path / "master.cf").write_text(MASTER)
    monkeypatch.setenv("POSTBUS_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("POSTBUS_NATS_URL", raising=False)
    c = Config.load(service="submission", check_support=False)
    assert c.config_dir == tmp_path
    assert c.get("config_directory") == str(tmp_path)
    assert c.get("syslog_name") == "postfix/submission"
    assert c.get("myorigin") == "mx.example.com"
    explicit = Config.load(tmp_path, overrides={"mail_name": "Postbus"}, check_support=False)
    assert explicit.get("smtpd_banner") == "mx.example.com ESMTP Postbus"
    (tmp_path / "main.cf").write_text("# c\nsmtpd_timeout = x\n")
    with pytest.raises(ConfigError, match=f"^{tmp_path}/main.cf, line 2: parameter smtpd_timeout"):
        Config.load(tmp_path)


def test_load_missing_files_gives_defaults(tmp_path: Path) -> None:
    c = Config.load(tmp_path)
    assert c.master == [] and c.main_cf_names() == []
    assert c.get("myorigin") == c.get("myhostname")


def test_every_registry_default_validates() -> None:
    c = cfg("")
    for name, param in PARAMS.items():
        assert c.raw(name) == param.default or name in ("config_directory", "myhostname",
                                                          "mydomain", "mynetworks")


def test_raw_parameters_are_not_expanded_at_load() -> None:
    c = cfg("luser_relay = $user@$mydomain\n")
    assert c.get("luser_relay") == "$user@$mydomain"
    assert c.get("forward_path").startswith("$home/.forward")
    assert c.get("default_rbl_reply").startswith("$rbl_code ")
