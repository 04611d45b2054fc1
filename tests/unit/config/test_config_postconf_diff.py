"""Differential tests against the real Postfix postconf(1).

Registry defaults must equal ``postconf -d`` verbatim, the registry must
know every name Postfix 3.7 knows, and our expansion of a main.cf full of
tricky values must equal ``postconf -x``.  Each side is one postconf run
over many names, so the tests stay fast.  Postfix answers live where it is
installed, else from ``tests/data/postfix/postconf.json`` (recorded from
Debian's Postfix 3.7.11): these comparisons never skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from postbus.config.loader import Config
from postbus.params import DIFFERS_FROM_POSTFIX, HOST_DEPENDENT, PARAMS
from tests.postfix_postconf import postconf as recorded_postconf
from tests.recorded import Recording

RECORDING = Recording("postconf")


def postconf(config_dir: Path, key: str, *args: str) -> str:
    status, out, _, _ = recorded_postconf(RECORDING, key, config_dir, *args, stderr=False)
    assert status == 0
    return out


def parse_settings(output: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in output.splitlines():
        name, sep, value = line.partition(" = ")
        if not sep:
            name, value = line.removesuffix(" ="), ""
        settings[name] = value
    return settings


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A config dir with the stock master.cf: postconf knows transport-specific
    names such as smtp_destination_concurrency_limit only for transports there."""
    (tmp_path / "main.cf").write_text("")
    shutil.copy(Path(__file__).parent / "data" / "master.cf", tmp_path / "master.cf")
    return tmp_path


def comparable() -> list[str]:
    return [
        name
        for name in PARAMS
        if name not in HOST_DEPENDENT
        and name not in DIFFERS_FROM_POSTFIX
        and not name.startswith("postbus_")
    ]


def test_registry_defaults_equal_postconf_d(config_dir: Path) -> None:
    names = comparable()
    assert len(names) > 800
    real = parse_settings(postconf(config_dir, "-d stock master.cf", "-d"))
    ours = {name: PARAMS[name].default for name in names}
    assert ours == {name: real[name] for name in names}


def test_registry_knows_every_postfix_parameter(tmp_path: Path) -> None:
    """``postconf -d`` with empty main.cf and master.cf: Postfix 3.7's own names
    (hopcount_limit, show_user_unknown_table_name, ...) are all in the registry."""
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("")
    real = parse_settings(postconf(tmp_path, "-d everything", "-d"))
    assert len(real) > 800
    builtin = {"process_id", "process_name", "service_name"}  # postconf's own
    missing = sorted(set(real) - set(PARAMS) - builtin)
    assert missing == []
    for name in ("hopcount_limit", "show_user_unknown_table_name",
                 "smtpd_forbid_bare_newline_exclusions"):
        assert PARAMS[name].default == real[name]


TRICKY_MAIN_CF = """\
# Tricky values; each must expand exactly as postconf -x expands it.
compatibility_level = 3.6
mail_name = Postfix
myhostname = mx.example.com
mydomain = example.com
mynetworks = 10.0.0.0/8
relay_domains = x${myhostname?{yes}:{no}}y
relayhost = ${undefined_x?{yes}:{no}}
smtpd_banner = ${{$mail_name} == {Postfix} ? {eq} : {ne}} $myhostname
smtp_helo_name = ${myhostname??foo:{b}ar}
alias_maps = $$myhostname $(mail_name) ${mail_name} a$$$mail_name
virtual_alias_maps = ${mail_name:foo}${empty:bar} $empty
empty =
transport_maps = ${mail_name?{ a b } : { c }}
canonical_maps = $mail_name-$mail_version. $mail-name $1abc
body_checks = ${mail_name?x:y}
mime_header_checks = ${empty?{a}:{b}}${mail_name?{a}:{b}}
nested_header_checks = ${mail_name?{a}:b} ${ mail_name } x${mail_name? a }y
bounce_notice_recipient = ${{a} != {b}}|${{a}=={a}}|${{$empty}=={}?yes}
delay_notice_recipient = $( mail_name )
error_notice_recipient = ${mail_name?$(myorigin)}
header_checks = $myorigin_x $mail_name_$mail_version
content_filter = ${{10}<{9}?x:y}${{a}<{b}?{lt}}${{2}>={10}?{ge}:{lt}}
smtpd_proxy_ehlo = ${{$compatibility_level} <level {3.6.1} ? {older} : {newer}}
luser_relay = $user@$mydomain
mua_sender_restrictions = permit_sasl_authenticated,
    reject_non_fqdn_sender
  # a comment inside the continuation
\treject_unknown_sender_domain
smtpd_sender_restrictions = $mua_sender_restrictions, check_policy_service
    { inet:127.0.0.1:9998, timeout=10s }
smtpd_reject_footer = \\c footer # not a comment
mydestination = $myhostname, localhost.$mydomain, ${relayhost:{$mydomain}}
smtpd_client_restrictions = ${smtpd_helo_required?{reject}:{permit}}
myorigin = $mydomain
local_recipient_maps = ${{$mydestination} != {} ? {$alias_maps} : {}}
smtpd_client_restrictions = last, wins
"""


def test_expansion_equals_postconf_x(config_dir: Path) -> None:
    (config_dir / "main.cf").write_text(TRICKY_MAIN_CF)
    names = [*comparable(), "config_directory", "mydomain", "myhostname", "mynetworks"]
    real = parse_settings(postconf(config_dir, "-x tricky", "-x"))  # every name, expanded
    cfg = Config.load(config_dir, check_support=False)
    # postconf -x prints values with runs of blanks folded to one space.
    ours = {name: " ".join(cfg.get(name).split()) for name in names}
    assert ours == {name: " ".join(real[name].split()) for name in names}


def test_main_cf_values_equal_postconf_n(config_dir: Path) -> None:
    (config_dir / "main.cf").write_text(TRICKY_MAIN_CF)
    real = parse_settings(postconf(config_dir, "-n tricky", "-n"))
    real.pop("config_directory")  # postconf -c shows it as set
    cfg = Config.load(config_dir, check_support=False)
    # postconf -n shows values with runs of blanks folded to one space
    ours = {name: " ".join(cfg.raw(name).split()) for name in cfg.main_cf_names()}
    assert ours == {name: " ".join(value.split()) for name, value in real.items()}
