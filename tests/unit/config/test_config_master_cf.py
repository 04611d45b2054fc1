"""master.cf: parsing, -o overrides, listen addresses, postconf -M golden output."""

from __future__ import annotations

from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.config.master_cf import MasterEntry, parse_master_cf

DATA = Path(__file__).parent / "data"


def _load(name: str) -> list[MasterEntry]:
    return parse_master_cf((DATA / name).read_text(), str(DATA / name))


@pytest.mark.parametrize("name", ["master.cf", "tricky-master.cf"])
@pytest.mark.parametrize(("fold", "suffix"), [(False, ".M.ref"), (True, ".Mf.ref")])
def test_render_matches_postconf_golden(name: str, fold: bool, suffix: str) -> None:
    """The .ref files are real Postfix 3.7 `postconf -M` / `postconf -Mf` output."""
    rendered = "".join(entry.render(fold=fold) + "\n" for entry in _load(name))
    assert rendered == (DATA / (name + suffix)).read_text()


def test_stock_debian_master_cf() -> None:
    entries = _load("master.cf")
    names = [e.name for e in entries]
    assert names[:4] == ["smtp/inet", "pickup/unix", "cleanup/unix", "qmgr/unix"]
    smtp = entries[0]
    assert (smtp.private, smtp.unpriv, smtp.chroot, smtp.wakeup, smtp.maxproc) == (
        "n", "-", "y", "-", "-",
    )
    assert smtp.command == "smtpd" and smtp.args == [] and smtp.overrides == {}
    assert smtp.line == 12 and smtp.file.endswith("master.cf")
    assert not smtp.is_private() and smtp.is_unpriv() and smtp.is_chroot()
    assert smtp.wakeup_seconds() == 0 and smtp.max_processes() == 100
    assert smtp.listen_address() == ("", 25)
    relay = next(e for e in entries if e.service == "relay")
    assert relay.overrides == {"syslog_name": "postfix/$service_name"}
    assert relay.listen_address() is None
    tlsmgr = next(e for e in entries if e.service == "tlsmgr")
    assert tlsmgr.wakeup == "1000?" and tlsmgr.wakeup_seconds() == 1000
    assert tlsmgr.is_private() and tlsmgr.is_chroot()
    maildrop = next(e for e in entries if e.service == "maildrop")
    assert maildrop.args == ["flags=DRXhu", "user=vmail", "argv=/usr/bin/maildrop", "-d",
                             "${recipient}"]
    assert maildrop.line == 93  # continuation lines keep the first line's number
    postlog = next(e for e in entries if e.service == "postlog")
    assert postlog.type == "unix-dgram"


def test_option_forms_are_normalised() -> None:
    entries = _load("tricky-master.cf")
    submission = entries[0]
    assert submission.overrides == {
        "syslog_name": "postfix/submission",
        "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        "smtpd_tls_security_level": "encrypt",
    }
    assert submission.args == ["-v"]
    assert entries[1].overrides == {"smtpd_x": "a b"}
    assert entries[1].args == ["arg with space", "plain", "more args"]
    assert entries[2].argv == ["-v", "-o", "content_filter="]
    assert entries[2].overrides == {"content_filter": ""}
    assert entries[2].max_processes() == 20


@pytest.mark.parametrize(
    ("service", "address"),
    [
        ("smtp", ("", 25)),
        ("submission", ("", 587)),
        ("smtps", ("", 465)),
        ("submissions", ("", 465)),
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:2525", ("::1", 2525)),
        ("2525", ("", 2525)),
        ("127.0.0.1:submission", ("127.0.0.1", 587)),
        ("0.0.0.0:smtp", ("0.0.0.0", 25)),
    ],
)
def test_listen_address(service: str, address: tuple[str, int]) -> None:
    entry = parse_master_cf(f"{service} inet n - n - - smtpd\n")[0]
    assert entry.listen_address() == address


@pytest.mark.parametrize("service", ["no-such-service-xyz", "127.0.0.1:99999", "0"])
def test_listen_address_rejects(service: str) -> None:
    entry = parse_master_cf(f"# c\n{service} inet n - n - - smtpd\n", "/etc/postbus/master.cf")[0]
    with pytest.raises(ConfigError, match=r"^/etc/postbus/master.cf, line 2: "):
        entry.listen_address()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("smtp inet n - n - smtpd", "bad field count"),
        ("smtp tcp n - n - - smtpd", 'invalid type field "tcp"'),
        ("smtp inet yes - n - - smtpd", 'invalid private field "yes"'),
        ("smtp inet n x n - - smtpd", 'invalid unprivileged field "x"'),
        ("smtp inet n - maybe - - smtpd", 'invalid chroot field "maybe"'),
        ("smtp inet n - n 1m - smtpd", 'invalid wakeup field "1m"'),
        ("smtp inet n - n - many smtpd", 'invalid process_limit field "many"'),
    ],
)
def test_bad_entries_name_file_and_line(line: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_master_cf(f"# comment\n\n{line}\n", "/etc/postbus/master.cf")
    assert str(info.value).startswith("/etc/postbus/master.cf, line 3: ")
    assert reason in str(info.value)


def test_daemons_get_options_as_getopt_reads_them_postconf_prints_its_way() -> None:
    """postconf splits an option word at any later "o" (-oname=no prints as
    "-o name=n -o", and that -o takes -vo for its value, as Postfix 3.7's
    postconf -M shows); the daemon, like a Postfix daemon's getopt(), gets name=no."""
    [entry] = parse_master_cf(
        "submission inet n - n - - smtpd -osmtpd_reject_unlisted_recipient=no"
        " -vo { smtpd_helo_required = yes } -o x=1 -- {a b} c\n"
    )
    assert entry.overrides == {"smtpd_reject_unlisted_recipient": "no",
                               "smtpd_helo_required": "yes", "x": "1"}
    assert entry.args == ["-v", "--", "a b", "c"]
    assert entry.argv == ["-o", "smtpd_reject_unlisted_recipient=n", "-o", "-vo",
                          "smtpd_helo_required = yes", "-o", "x=1", "--", "a b", "c"]
