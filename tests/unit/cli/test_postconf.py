"""postbus postconf: flags, formats, edits and diagnostics (no Postfix needed).

The byte-for-byte comparison with the real postconf(1) is in
test_postconf_diff.py; the cases here pin down the same behaviour so it
holds where Postfix is not installed.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from postbus.cli import postconf
from postbus.maps.table import registered_types
from postbus.params import PARAMS

DATA = Path(__file__).parent / "data"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = postconf.main(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def cfdir(tmp_path: Path) -> Path:
    """A writable copy of the tls-sasl corpus case."""
    target = tmp_path / "cf"
    shutil.copytree(DATA / "tls-sasl", target)
    return target


def write(directory: Path, main_cf: str, master_cf: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.cf").write_text(main_cf)
    (directory / "master.cf").write_text(master_cf)
    return directory


# -- output formatting ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fold", "expected"),
    [
        ("a = b", False, "a = b\n"),
        ("a =", False, "a =\n"),
        ("a =   b \t c  ", False, "a = b c\n"),
        ("x = " + "word " * 20, False, "x = " + " ".join(["word"] * 20) + "\n"),
        ("x = " + "word " * 20, True,
         "x = " + " ".join(["word"] * 15) + "\n    " + " ".join(["word"] * 5) + "\n"),
    ],
)
def test_format_line(text: str, fold: bool, expected: str) -> None:
    assert postconf.format_line(text, fold) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=b", ("a", "b")),
        ("  a  =  b c  ", ("a", "b c")),
        ("a=", ("a", "")),
        ("a==b", ("a", "=b")),
        ("", "missing attribute name"),
        ("=x", "missing attribute name"),
        ("a", "missing '=' after attribute name"),
        ("a b=c", "missing '=' after attribute name"),
    ],
)
def test_split_nameval(text: str, expected: tuple[str, str] | str) -> None:
    if isinstance(expected, tuple):
        assert postconf.split_nameval(text) == expected
    else:
        with pytest.raises(postconf.Fatal, match=expected):
            postconf.split_nameval(text)


@pytest.mark.parametrize(
    ("text", "least", "most", "expected"),
    [
        ("smtp", 1, 2, ["smtp", "*"]),
        ("smtp/inet", 1, 2, ["smtp", "inet"]),
        ("smtp//inet", 1, 2, ["smtp", "inet"]),
        ("*/unix", 1, 2, ["*", "unix"]),
        ("sm*", 1, 2, None),
        ("/smtp", 1, 2, None),
        ("a/b/c", 1, 2, None),
        ("submission/inet/x", 1, 3, ["submission", "inet", "x"]),
        ("submission", 3, 3, None),
    ],
)
def test_service_pattern(text: str, least: int, most: int, expected: list[str] | None) -> None:
    assert postconf.service_pattern(text, least, most) == expected


# -- option checks and fatal errors --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-e", "-X", "a"], "specify one of -e -X"),
        (["-d", "-n"], "specify one of -d -n"),
        (["-M", "-P"], "specify one of -M -P"),
        (["-M", "-n"], "with option -M, do not specify -n"),
        (["-P", "-d"], "with option -P, do not specify -d"),
        (["-e"], "-e requires name=value argument"),
        (["-e", "foo"], "missing '=' after attribute name: \"foo\""),
        (["-X", "a=b"], "specify one of -e -X"),
        (["-#", ""], "-X or -# requires non-blank parameter names"),
        (["-e", "#a=b"], "-e, -X, or -# accepts no comment input"),
        (["-M", "smtp/inet/x"], "-M option requires service_name[/type]"),
        (["-P", "a/b/c/d"], "-P option requires service_name[/type[/parameter]]"),
        (["-Me", "smtp=x"], "-Me, -MX or -M# requires service_name/type"),
        (["-Pe", "smtp/inet=x"], "-Pe or -PX requires service_name/type/parameter"),
        (["-Pe", "smtp/inet/*=x"], "-Pe does not accept wild-card parameter name"),
        (["-Pe", "smtp/inet/a=b c"], "-Pe does not accept whitespace in parameter value"),
    ],
)
def test_fatal_errors(cfdir: Path, argv: list[str], message: str) -> None:
    status, out, err = run("-c", str(cfdir), *argv)
    assert (status, out) == (1, "")
    assert err.splitlines()[-1] == f"postconf: fatal: {message}"


def test_bad_option_prints_usage() -> None:
    status, _, err = run("-Q")
    assert status == 1
    first, second = err.splitlines()
    assert first == "postconf: invalid option -- 'Q'"
    assert second.startswith("postconf: fatal: usage: postconf [-a (server SASL types)]")


def test_missing_main_cf_is_fatal(tmp_path: Path) -> None:
    status, out, err = run("-c", str(tmp_path), "-n")
    assert (status, out) == (1, "")
    assert err == f"postconf: fatal: open {tmp_path}/main.cf: No such file or directory\n"


def test_missing_master_cf_is_a_warning_for_parameters(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("relayhost = x\n")
    status, out, err = run("-c", str(tmp_path), "relayhost")
    assert (status, out) == (0, "relayhost = x\n")
    assert err == f"postconf: warning: open {tmp_path}/master.cf: No such file or directory\n"
    status, out, err = run("-c", str(tmp_path), "-M")
    assert status == 1
    assert err == f"postconf: fatal: open {tmp_path}/master.cf: No such file or directory\n"


# -- showing parameters -------------------------------------------------------------


def test_no_arguments_lists_every_parameter_sorted(cfdir: Path) -> None:
    status, out, _ = run("-c", str(cfdir))
    assert status == 0
    names = [line.partition(" =")[0] for line in out.splitlines()]
    assert names == sorted(names)
    # lmtp_/virtual_destination_* exist only for transports in master.cf
    assert {n for n in PARAMS if not n.startswith(("lmtp_", "virtual_"))} <= set(names)
    assert "lmtp_destination_concurrency_limit" not in names
    assert "relayhost =" in out.splitlines()
    assert "smtpd_tls_security_level = may" in out.splitlines()
    # per-transport names derived from master.cf, and a used user-defined name
    assert "relay_destination_concurrency_limit = $default_destination_concurrency_limit" in out
    assert "mua_client_restrictions = permit_sasl_authenticated, reject" in out


def test_n_shows_main_cf_settings_and_config_directory(cfdir: Path) -> None:
    status, out, err = run("-c", str(cfdir), "-n")
    assert status == 0
    lines = out.splitlines()
    assert lines == sorted(lines)
    assert f"config_directory = {cfdir}" in lines
    assert "smtpd_tls_session_cache_database = btree:/var/spool/postfix/smtpd_scache" in lines
    assert ("smtpd_recipient_restrictions = permit_mynetworks permit_sasl_authenticated "
            "check_ccert_access hash:/etc/postfix/relay_certificates permit_tls_clientcerts "
            "reject_unauth_destination") in lines
    # Every Postfix 3.7 parameter is known, implemented by Postbus or not.
    assert "smtpd_tls_dh1024_param_file = /etc/postfix/dh_1024.pem" in lines
    assert "unused parameter" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["relayhost", "myorigin"], "relayhost =\nmyorigin = $mydomain\n"),
        (["-h", "myorigin"], "$mydomain\n"),
        (["-x", "myorigin"], "myorigin = example.com\n"),
        (["-xh", "mydestination"],
         "mx1.example.com, localhost.example.com, localhost, example.com\n"),
        (["-d", "myorigin", "smtpd_tls_security_level"],
         "myorigin = $myhostname\nsmtpd_tls_security_level =\n"),
        (["-n", "relayhost", "smtpd_sasl_type"], "smtpd_sasl_type = dovecot\n"),
        (["-H", "-n", "smtpd_sasl_type"], "smtpd_sasl_type\n"),
        (["-x", "smtpd_client_restrictions"], "smtpd_client_restrictions =\n"),
    ],
)
def test_named_parameters(cfdir: Path, argv: list[str], expected: str) -> None:
    status, out, _ = run("-c", str(cfdir), *argv)
    assert (status, out) == (0, expected)


def test_unknown_parameter_warning(cfdir: Path) -> None:
    status, out, err = run("-c", str(cfdir), "no_such_thing", "relayhost")
    assert (status, out) == (0, "relayhost =\n")
    assert "postconf: warning: no_such_thing: unknown parameter" in err.splitlines()


def test_duplicate_unused_and_undefined_warnings(tmp_path: Path) -> None:
    cf = write(
        tmp_path / "q",
        "relayhost = a\nrelayhost = b\nfoo = 1\nbar = $foo\nalways = x\n"
        "mydestination = $used_one, $nowhere\nused_one = y\n",
        "smtp inet n - n - - smtpd -o local_x=1 -o smtpd_banner=$local_x$master_undef\n",
    )
    status, out, err = run("-c", str(cf), "-n")
    assert status == 0
    # foo is used by bar's value, even though bar itself is unused.
    assert out.splitlines()[1:] == [
        "foo = 1", "mydestination = $used_one, $nowhere", "relayhost = b", "used_one = y"]
    d = str(cf)
    assert err.splitlines() == [
        f"postconf: warning: {d}/main.cf, line 2: overriding earlier entry: relayhost=a",
        f"postconf: warning: {d}/master.cf: undefined parameter: master_undef",
        f"postconf: warning: {d}/main.cf: undefined parameter: nowhere",
        f"postconf: warning: {d}/main.cf: unused parameter: bar=$foo",
        f"postconf: warning: {d}/main.cf: unused parameter: always=x",
    ]


def test_restriction_classes_are_user_parameters(tmp_path: Path) -> None:
    cf = write(
        tmp_path / "r",
        "smtpd_restriction_classes = strict\nstrict = reject\n",
        "smtp inet n - n - - smtpd -o smtpd_restriction_classes=local -o local=permit\n",
    )
    _, out, err = run("-c", str(cf), "-n")
    assert "strict = reject" in out.splitlines()
    assert err == ""


def test_d_ignores_main_cf(cfdir: Path) -> None:
    _, out, err = run("-c", str(cfdir), "-d", "smtpd_sasl_type", "mua_client_restrictions")
    assert out == "smtpd_sasl_type = cyrus\n"
    assert err == "postconf: warning: mua_client_restrictions: unknown parameter\n"


def test_m_lists_table_types() -> None:
    status, out, _ = run("-m")
    assert (status, out.splitlines()) == (0, registered_types())


def test_l_lists_lock_types() -> None:
    assert run("-l")[:2] == (0, "flock\nfcntl\ndotlock\n")


# -- master.cf ------------------------------------------------------------------------


def test_M_prints_entries_and_filters(cfdir: Path) -> None:
    status, out, err = run("-c", str(cfdir), "-M", "smtps", "relay/unix", "nope/inet")
    assert status == 0
    assert out.splitlines() == [
        "smtps      inet  n       -       y       -       -       smtpd"
        " -o syslog_name=postfix/smtps -o smtpd_tls_wrappermode=yes -o smtpd_sasl_auth_enable=yes"
        " -o {smtpd_recipient_restrictions=permit_sasl_authenticated, reject}"
        " -o milter_macro_daemon_name=ORIGINATING",
        "relay      unix  -       -       y       -       -       smtp"
        " -o syslog_name=postfix/$service_name -o smtp_tls_security_level=encrypt",
    ]
    assert err == 'postconf: warning: unmatched request: "nope/inet"\n'


def test_P_prints_overrides_sorted_per_service(cfdir: Path) -> None:
    _, out, _ = run("-c", str(cfdir), "-P", "submission/inet")
    assert out.splitlines() == [
        "submission/inet/milter_macro_daemon_name = ORIGINATING",
        "submission/inet/smtpd_client_restrictions = $mua_client_restrictions",
        "submission/inet/smtpd_recipient_restrictions = permit_sasl_authenticated,reject",
        "submission/inet/smtpd_reject_unlisted_recipient = no",
        "submission/inet/smtpd_sasl_auth_enable = yes",
        "submission/inet/smtpd_tls_auth_only = yes",
        "submission/inet/smtpd_tls_security_level = encrypt",
        "submission/inet/syslog_name = postfix/submission",
    ]
    # Output follows master.cf order, not the order of the requests.
    _, out, _ = run("-c", str(cfdir), "-Px", "relay/unix/syslog_name",
                         "submission/inet/smtpd_client_restrictions")
    assert out == ("submission/inet/smtpd_client_restrictions = permit_sasl_authenticated, "
                   "reject\nrelay/unix/syslog_name = postfix/relay\n")
    _, out, _ = run("-c", str(cfdir), "-Ph", "smtps/inet/smtpd_recipient_restrictions")
    assert out == "permit_sasl_authenticated, reject\n"


# -- edits ------------------------------------------------------------------------------


def test_e_then_n_round_trip_keeps_comments(cfdir: Path) -> None:
    before = (cfdir / "main.cf").read_text()
    status, out, err = run("-c", str(cfdir), "-e", "relayhost=[smtp.example.net]:587",
                           "smtpd_recipient_restrictions = permit_mynetworks, reject",
                           "new_knob_param =")
    assert (status, out, err) == (0, "", "")
    after = (cfdir / "main.cf").read_text()
    assert "relayhost = [smtp.example.net]:587\n" in after
    assert after.endswith("new_knob_param = \n")
    assert "smtpd_recipient_restrictions = permit_mynetworks, reject\nrelay_clientcerts" in after
    comments = [line for line in before.splitlines() if line.startswith("#")]
    assert comments == [line for line in after.splitlines() if line.startswith("#")]
    _, shown, _ = run("-c", str(cfdir), "-n")
    assert "relayhost = [smtp.example.net]:587" in shown.splitlines()
    assert "smtpd_recipient_restrictions = permit_mynetworks, reject" in shown.splitlines()


def test_plain_name_value_edits(cfdir: Path) -> None:
    assert run("-c", str(cfdir), "relayhost=direct.example")[0] == 0
    assert run("-c", str(cfdir), "-h", "relayhost")[1] == "direct.example\n"


def test_X_and_comment_out(tmp_path: Path) -> None:
    text = "# head\nrelayhost = a\n  # inner\n    b\nmyorigin = x\nrelayhost = c\n"
    cf = write(tmp_path / "x", text)
    _, _, err = run("-c", str(cf), "-#", "relayhost")
    assert (cf / "main.cf").read_text() == (
        "# head\n#relayhost = a\n  # inner\n#    b\nmyorigin = x\n#relayhost = c\n")
    assert err == f'postconf: warning: {cf}/main.cf: multiple entries for "relayhost"\n'
    write(cf, text)
    run("-c", str(cf), "-X", "relayhost", "nothere")
    assert (cf / "main.cf").read_text() == "# head\n  # inner\nmyorigin = x\n"
    assert run("-c", str(cf), "-n", "relayhost")[1] == ""


def test_e_ignores_earlier_request(tmp_path: Path) -> None:
    cf = write(tmp_path / "e", "")
    _, _, err = run("-c", str(cf), "-e", "a=1", "a=2")
    assert (cf / "main.cf").read_text() == "a = 2\n"
    assert err == "postconf: warning: ignoring earlier request: 'a = 1'\n"


def test_Me_replaces_and_adds_entries(cfdir: Path) -> None:
    status, _, _ = run("-c", str(cfdir), "-Me",
                       "smtps/inet=smtps inet n - y - - smtpd -o smtpd_tls_wrappermode=yes",
                       "policy/inet=127.0.0.1:10031 inet n - n - - policy")
    assert status == 0
    _, out, _ = run("-c", str(cfdir), "-M", "smtps", "127.0.0.1:10031")
    assert out == (
        "smtps      inet  n       -       y       -       -       smtpd"
        " -o smtpd_tls_wrappermode=yes\n"
        "127.0.0.1:10031 inet n   -       n       -       -       policy\n")
    assert "# service type  private" in (cfdir / "master.cf").read_text()


def test_MX_and_M_comment(cfdir: Path) -> None:
    run("-c", str(cfdir), "-MX", "smtps/inet")
    run("-c", str(cfdir), "-M#", "submission/inet")
    text = (cfdir / "master.cf").read_text()
    assert "smtps" not in text
    assert "#submission inet n       -       y       -       -       smtpd\n#  -o syslog" in text
    assert run("-c", str(cfdir), "-M", "submission")[2] == (
        'postconf: warning: unmatched request: "submission"\n')


def test_Pe_and_PX(cfdir: Path) -> None:
    run("-c", str(cfdir), "-Pe", "submission/inet/smtpd_tls_security_level=may",
        "smtp/inet/smtpd_tls_security_level=none")
    run("-c", str(cfdir), "-PX", "submission/inet/syslog_name")
    _, out, _ = run("-c", str(cfdir), "-P", "submission/inet/syslog_name",
                    "submission/inet/smtpd_tls_security_level", "smtp/inet")
    assert out == ("smtp/inet/smtpd_tls_security_level = none\n"
                   "submission/inet/smtpd_tls_security_level = may\n")
    status, _, err = run("-c", str(cfdir), "-Pe", "nope/inet/x=1")
    assert (status, err) == (0, 'postconf: warning: unmatched service_name/type: "nope/inet/x=1"\n')


def test_postbus_entry_point_passes_c(cfdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from postbus.cli.main import main as postbus_main

    assert postbus_main(["-c", str(cfdir), "postconf", "-h", "smtpd_sasl_path"]) == 0
    assert capsys.readouterr().out == "private/auth\n"


@pytest.mark.parametrize(
    ("argv", "name"), [(["-e", "a=b"], "main.cf"), (["-MX", "a/b"], "master.cf")]
)
def test_edit_needs_the_file(tmp_path: Path, argv: list[str], name: str) -> None:
    status, out, err = run("-c", str(tmp_path), *argv)
    assert (status, out) == (1, "")
    missing = f"open {tmp_path}/{name} for reading: No such file or directory"
    assert err == f"postconf: fatal: {missing}\n"


# -- master.cf fields (-F, -Fe) ----------------------------------------------------------


def test_F_prints_every_field_of_every_service_line(cfdir: Path) -> None:
    status, out, err = run("-c", str(cfdir), "-F", "smtp/inet", "cleanup/unix/process_limit")
    assert (status, err) == (0, "")
    assert out == (
        "smtp/inet/service = smtp\n"
        "smtp/inet/type = inet\n"
        "smtp/inet/private = n\n"
        "smtp/inet/unprivileged = -\n"
        "smtp/inet/chroot = y\n"
        "smtp/inet/wakeup = -\n"
        "smtp/inet/process_limit = -\n"
        "smtp/inet/command = smtpd\n"
        "cleanup/unix/process_limit = 0\n"
    )
    _, out, _ = run("-c", str(cfdir), "-Fhx", "relay/unix/command")
    assert out == ("smtp -o syslog_name=postfix/relay -o smtp_tls_security_level=encrypt\n")
    _, out, _ = run("-c", str(cfdir), "-FH", "relay/unix/command")
    assert out == "relay/unix/command\n"
    status, _, err = run("-c", str(cfdir), "-F", "smtp/inet/maxproc")
    assert (status, err) == (1, 'postconf: fatal: invalid service attribute name: "maxproc"\n')


def test_Fe_edits_one_field_in_place(cfdir: Path) -> None:
    status, out, err = run("-c", str(cfdir), "-Fe", "smtp/inet/chroot=n",
                           "relay/unix/command=smtp -o smtp_helo_timeout=5")
    assert (status, out, err) == (0, "", "")
    text = (cfdir / "master.cf").read_text()
    assert "\nsmtp       inet  n       -       n       -       -       smtpd\n" in text
    assert ("\nrelay      unix  -       -       y       -       -       smtp\n"
            "    -o smtp_helo_timeout=5\n") in text
    status, _, err = run("-c", str(cfdir), "-Fe", "smtp/inet/wakeup=soon")
    assert (status, err) == (1, 'postconf: fatal: invalid wakeup field "soon" in "soon"\n')
    status, _, err = run("-c", str(cfdir), "-Fe", "nope/inet/chroot=n")
    assert (status, err) == (0, 'postconf: warning: unmatched service_name/type: '
                                '"nope/inet/chroot=n"\n')


# -- parameter classes (-C) ------------------------------------------------------------------


def test_C_selects_builtin_service_and_user_names(cfdir: Path) -> None:
    _, out, _ = run("-c", str(cfdir), "-C", "user", "-n")
    assert out == "mua_client_restrictions = permit_sasl_authenticated, reject\n"
    _, out, _ = run("-c", str(cfdir), "-C", "service")
    names = [line.partition(" =")[0] for line in out.splitlines()]
    assert "relay_destination_concurrency_limit" in names
    assert "local_destination_concurrency_limit = 2" in out.splitlines()
    assert "relayhost" not in names
    _, out, _ = run("-c", str(cfdir), "-C", "Builtin", "-n", "-h", "smtpd_sasl_type")
    assert out == "dovecot\n"
    status, _, err = run("-c", str(cfdir), "-C", "builtin,bogus")
    assert (status, err) == (1, 'postconf: fatal: unknown -C option value "bogus" in '
                                '"builtin,bogus"\n')


# -- what Postbus supports (-a, -A, -T, -t, -b) ---------------------------------------------


def test_sasl_types_are_those_postbus_implements() -> None:
    """smtpd offers no AUTH and the SMTP client does not authenticate yet: none."""
    assert run("-a") == (0, "", "")
    assert run("-A") == (0, "", "")


def test_T_answers_for_pythons_ssl_module() -> None:
    import ssl

    assert run("-T", "run-version") == (0, ssl.OPENSSL_VERSION + "\n", "")
    status, out, _ = run("-T", "compile-version")
    assert status == 0 and out.startswith("OpenSSL ") and ssl.OPENSSL_VERSION.startswith(
        out.split()[0])
    built = getattr(ssl, "_OPENSSL_API_VERSION", ssl.OPENSSL_VERSION_INFO)
    assert out.split()[1].startswith(f"{built[0]}.{built[1]}.")
    status, out, _ = run("-T", "public-key-algorithms")
    assert status == 0 and "rsa\n" in out and out.splitlines() == sorted(out.splitlines())
    assert run("-T", "bogus") == (1, "", "postconf: warning: unknown 'postconf -T' mode: bogus\n")


def test_t_and_b_show_the_templates_the_qmgr_sends(cfdir: Path) -> None:
    status, out, err = run("-c", str(cfdir), "-t")
    assert (status, err) == (0, "")
    assert out.startswith("failure_template = <<EOF\nCharset: us-ascii\n"
                          "From: Mail Delivery System <MAILER-DAEMON>\n"
                          "Subject: Undelivered Mail Returned to Sender\n"
                          "Postmaster-Subject: Postmaster Copy: Undelivered Mail\n\n")
    assert [line for line in out.splitlines() if line.endswith("_template = <<EOF")] == [
        "failure_template = <<EOF", "delay_template = <<EOF", "success_template = <<EOF",
        "verify_template = <<EOF"]
    assert out.endswith("The mail system\nEOF\n")
    _, out, _ = run("-c", str(cfdir), "-b")
    assert out.startswith("expanded_failure_text = <<EOF\n"
                          "This is the mail system at host mx1.example.com.\n")
    status, _, err = run("-c", str(cfdir), "-b", str(cfdir / "none"))
    assert (status, err) == (1, f"postbus/bounce: fatal: open {cfdir}/none: "
                                "No such file or directory\n")
