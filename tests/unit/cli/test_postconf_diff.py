"""Differential tests: ``postbus postconf`` against the real postconf(1).

Each case directory in data/ (main.cf + master.cf, with every TLS, SASL,
relay, transport and policy example of the talk in the seed, the stock
Debian files, and master-edges: -o forms, braces, comments inside entries,
commented-out services, long lines, no final newline; master-braces: brace
slips postconf warns about) is read by
``postconf -c DIR`` and by ``postbus postconf -c DIR`` (in-process) with the
same flags (-n, -d, -x, -M, -F, -P, -C, -o, ...); stdout must be equal byte
for byte and stderr line for line (sorted: Postfix 3.7 reports unused
parameters in hash-table order, which varies between runs).  Edits (-e,
-X, -#, -Me, -Fe, -Pe, -MX, -PX, -M#) run on two copies and the resulting
files must be identical.  Notice templates (-t, -b, the template files in
data/bounce-templates/, bounce_template_file) compare with Postfix's four.

Postfix answers live where it is installed and from its recorded answers
(``tests/data/postfix/postconf_cli.json``) everywhere else, so these
comparisons never skip; see :mod:`tests.postfix_postconf`.  The registry
knows every Postfix 3.7 parameter, implemented or not, so nothing is
filtered out but DIFFERS_FROM_POSTFIX (mail_name) and host-dependent
defaults, which the -x/-d name lists avoid.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest

from postbus.cli import postconf as postbus_postconf
from postbus.params import DIFFERS_FROM_POSTFIX, HOST_DEPENDENT, PARAMS
from tests.postfix_postconf import mask, postconf
from tests.recorded import Recording

RECORDING = Recording("postconf_cli")

DATA = Path(__file__).parent / "data"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "main.cf").exists())

#: Parameters compared with -x (values must not depend on mail_name or the host).
X_NAMES = [
    "relayhost", "mydestination", "myorigin", "smtpd_recipient_restrictions",
    "smtpd_sender_restrictions", "smtpd_tls_cert_file", "smtpd_tls_session_cache_database",
    "smtp_tls_policy_maps", "transport_maps", "relay_domains", "virtual_alias_maps",
    "non_smtpd_milters", "mime_header_checks", "default_rbl_reply", "smtpd_client_restrictions",
    "local_recipient_maps", "relay_destination_concurrency_limit", "slow_destination_rate_delay",
    "unused_thing", "my_networks_extra", "nosuch_parameter",
]
D_NAMES = [
    "relayhost", "myorigin", "mydestination", "smtpd_tls_security_level", "smtpd_sasl_type",
    "smtp_tls_session_cache_database", "smtpd_recipient_restrictions", "relay_domains",
    "maximal_queue_lifetime", "relay_destination_concurrency_limit", "nosuch_parameter",
]


def age(directory: Path) -> None:
    """postconf delays reading files modified within the last second."""
    past = time.time() - 10
    for path in directory.iterdir():
        os.utime(path, (past, past))


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's tmp_path, where a run without xdist has it: postconf -f folds a line at
    80 columns, config_directory's too, so the recorded answers hold only for paths as
    long as those they were made with; an xdist worker's are longer (.../popen-gw2/...),
    and -nf answered differently. (With --dist loadfile, no other worker takes the name.)"""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path
    path = tmp_path.parent.parent / tmp_path.name  # basetemp/popen-gwN/NAME -> basetemp/NAME
    try:
        path.mkdir()
    except FileExistsError:  # not --dist loadfile: another worker ran a test of this name
        return tmp_path
    return path


def copy_case(case: str, target: Path) -> Path:
    shutil.copytree(DATA / case, target)
    age(target)
    return target


def real(directory: Path, case: str, *args: str) -> tuple[int, str, str]:
    """Postfix's postconf on a copy of ``case``."""
    status, out, err, _ = postconf(RECORDING, f"{case} {' '.join(args)}", directory, *args)
    return status, out, err


def ours(directory: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = postbus_postconf.main(["-c", str(directory), *args], out, err)
    return status, mask(out.getvalue(), args), err.getvalue()


_POSTFIX_ONLY: dict[str, frozenset[str]] = {}


def postfix_only(directory: Path, case: str) -> frozenset[str]:
    """Names postconf -d knows (with this master.cf) that postbus postconf does not."""
    if case not in _POSTFIX_ONLY:
        theirs = {line.partition(" =")[0] for line in real(directory, case, "-d")[1].splitlines()}
        mine = {line.partition(" =")[0] for line in ours(directory, "-d")[1].splitlines()}
        _POSTFIX_ONLY[case] = frozenset(theirs - mine)
    return _POSTFIX_ONLY[case]


def drop_postfix_only(text: str, names: frozenset[str]) -> str:
    """Remove `name = value` lines of names only Postfix knows."""
    return "".join(
        line for line in text.splitlines(keepends=True)
        if line.partition(" =")[0] not in names
    )


def drop_unused_warnings(text: str, names: frozenset[str]) -> str:
    """Remove Postbus's "unused parameter" warnings for names only Postfix knows."""
    kept = []
    for line in text.splitlines(keepends=True):
        _, sep, rest = line.partition(": unused parameter: ")
        if sep and rest.partition("=")[0] in names:
            continue
        kept.append(line)
    return "".join(kept)


def as_postfix_names_itself(text: str) -> str:
    """mail_name is Postbus by design (DIFFERS_FROM_POSTFIX); undo it in -x output."""
    assert "mail_name" in DIFFERS_FROM_POSTFIX
    return text.replace(f"ESMTP {PARAMS['mail_name'].default}", "ESMTP Postfix")


def same(
    directory: Path, case: str, args: list[str], names: frozenset[str],
    filter_stdout: bool = False,
) -> None:
    r_status, r_out, r_err = real(directory, case, *args)
    o_status, o_out, o_err = ours(directory, *args)
    if filter_stdout and "h" in args[0]:
        # Values only: take the names from the same run without -h.
        named = real(directory, case, args[0].replace("h", ""), *args[1:])[1]
        assert [line.partition(" =")[2].lstrip(" ") for line in named.splitlines()] == (
            r_out.splitlines())
        r_out = "".join(
            line.partition(" =")[2].lstrip(" ") + "\n"
            for line in drop_postfix_only(named, names).splitlines()
        )
    elif filter_stdout:
        r_out = drop_postfix_only(r_out, names)
    o_err = drop_unused_warnings(o_err, names)
    o_out = as_postfix_names_itself(o_out)
    assert o_status == r_status, (args, o_err, r_err)
    assert o_out == r_out, args
    assert sorted(o_err.splitlines()) == sorted(r_err.splitlines()), args


SHOW_ARGS = [
    ["-n"], ["-nf"], ["-nh"], ["-nx"], ["-M"], ["-Mf"], ["-P"], ["-Pf"], ["-Px"], ["-Ph"],
    ["-M", "smtp", "submission/inet", "nope/inet", "*/unix"],
    ["-P", "submission/inet", "smtp/inet/content_filter", "relay/*/syslog_name", "nope"],
    ["-Pf", "*/*/smtpd_recipient_restrictions"],
    ["-x", *X_NAMES], ["-xh", *X_NAMES], ["-d", *D_NAMES], ["-dx", *D_NAMES],
    ["-h", *D_NAMES], ["-n", *X_NAMES], ["-H", *X_NAMES], ["nosuch_parameter", "relayhost"],
    # every service line, whatever Postbus runs for it, field by field
    ["-Mx"], ["-Mfx"], ["-PH"], ["-F"], ["-Ff"], ["-Fx"], ["-Ffx"], ["-Fh"], ["-FH"],
    ["-F", "smtp/inet", "smtp/unix/command", "*/*/chroot", "nope/inet", "cleanup"],
    ["-Fhf", "*/*/command"],
    ["-o", "relayhost=[o.example]", "-Mx"], ["-o", "smtpd_sasl_path=zzz", "-Pxf"],
    ["-C", "builtin", "-n"], ["-C", "user", "-n"], ["-C", "user"], ["-C", "service"],
    ["-C", "USER,service", "-h"], ["-C", "", "-n"], ["-C", "user", "-d"],
]

#: Postfix's option rules and their diagnostics (one configuration is enough).
OPTION_ARGS = [
    ["-F", "smtp/inet/nosuch"], ["-F", "a/b/c/d"], ["-F", "/x"],
    ["-o", "relayhost=[o.example]", "-x", "relayhost"], ["-o", "my_extra=1", "-n"],
    ["-C", "nosuch"], ["-C", "builtin,nosuch"], ["-C", "builtin|user"],
    ["-o", "relayhost", "-n"], ["-o", "=x", "-n"], ["-o", "x=y", "-d"],
    ["-F", "-P"], ["-a", "-A"], ["-a", "-n"], ["-F", "-d"], ["-F#", "smtp/inet/chroot"],
    ["-FX", "smtp/inet/chroot"], ["-P#", "a/b/c"], ["-Mh"], ["-T", "a", "-T", "b"], ["-T"],
    ["-T", "nosuch"], ["-Tx", "-n"], ["-b", "-t"], ["-t", "a", "b"], ["-Z"], ["-E"], ["-c"],
    ["-ex"], ["-hH"], ["-fe", "a=b"], ["-o", "x=y", "-X", "a"], ["-Me"], ["-MX"], ["-Fe"],
    ["relayhost", "-n"], ["-C", "builtin", "-M", "smtp/inet"], ["-l"],
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("args", SHOW_ARGS, ids=" ".join)
def test_show(case: str, args: list[str], tmp_path: Path) -> None:
    directory = copy_case(case, tmp_path / case)
    same(directory, case, args, postfix_only(directory, case),
         filter_stdout=args[0].startswith("-n"))


@pytest.mark.parametrize("args", OPTION_ARGS, ids=" ".join)
def test_options(args: list[str], tmp_path: Path) -> None:
    directory = copy_case("tls-sasl", tmp_path / "tls-sasl")
    same(directory, "tls-sasl", args, postfix_only(directory, "tls-sasl"))


@pytest.mark.parametrize("case", CASES)
def test_param_classes(case: str, tmp_path: Path) -> None:
    """-C: the service and user classes are Postfix's to the letter; builtin is the
    rest of Postfix's full listing (its names and values) plus Postbus's postbus_* names."""
    directory = copy_case(case, tmp_path / case)
    listed: dict[str, set[str]] = {}
    for name in ("service", "user"):
        same(directory, case, ["-C", name], frozenset())
        listed[name] = {line.partition(" =")[0] for line in ours(directory, "-C", name)[1]
                        .splitlines()}
    r_status, r_out, _ = real(directory, case)
    o_status, o_out, _ = ours(directory, "-C", "builtin")
    assert o_status == r_status == 0
    def parse(text: str) -> dict[str, str]:
        pairs = (line.partition(" =") for line in text.splitlines())
        return {name: value.removeprefix(" ") for name, _, value in pairs}

    theirs, mine = parse(r_out), parse(o_out)
    builtin = set(theirs) - listed["service"] - listed["user"]
    assert {n for n in mine if not n.startswith("postbus_")} == builtin
    differ = set(HOST_DEPENDENT) | set(DIFFERS_FROM_POSTFIX) | {"process_id"}
    assert {n for n in builtin if n not in differ and mine[n] != theirs[n]} == set()


@pytest.mark.parametrize("case", CASES)
def test_postbus_knows_every_name_postfix_knows(case: str, tmp_path: Path) -> None:
    """Implemented or not: postconf -d shows every Postfix 3.7 name, main.cf's and
    the per-transport ones master.cf asks for, and warns about none as unused."""
    directory = copy_case(case, tmp_path / case)
    assert postfix_only(directory, case) == frozenset()


@pytest.mark.parametrize("case", CASES)
def test_all_parameters(case: str, tmp_path: Path) -> None:
    """postconf with no arguments: every name Postbus prints has Postfix's value."""
    directory = copy_case(case, tmp_path / case)
    r_status, r_out, _ = real(directory, case)
    o_status, o_out, _ = ours(directory)
    assert o_status == r_status == 0

    def parse(text: str) -> dict[str, str]:
        pairs = (line.partition(" =") for line in text.splitlines())
        return {name: value.removeprefix(" ") for name, _, value in pairs}

    theirs, mine = parse(r_out), parse(o_out)
    assert list(mine) == sorted(mine)
    skip = set(HOST_DEPENDENT) | set(DIFFERS_FROM_POSTFIX) | {"process_id"}
    compared = {
        name: value for name, value in mine.items()
        if name not in skip and not name.startswith("postbus_")
    }
    assert compared == {name: theirs.get(name) for name in compared}
    assert set(theirs) - set(mine) <= postfix_only(directory, case)


def test_mail_name_is_an_intended_difference(tmp_path: Path) -> None:
    directory = copy_case("debian-stock", tmp_path / "d")
    banner = "mail.example.org ESMTP {} (Debian/GNU)\n"
    assert real(directory, "debian-stock", "-xh", "smtpd_banner")[1] == banner.format("Postfix")
    assert ours(directory, "-xh", "smtpd_banner")[1] == banner.format("Postbus")


# One new name per -e: Postfix appends several new names in hash-table
# order, which varies between runs (Postbus uses argument order).
EDITS = [
    ["-e", "relayhost=[mail.example.net]:587", "smtpd_sender_restrictions="],
    ["-e", "  new_knob =  a  b  "],
    ["-e", "relayhost="],
    ["-e", "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination"],
    ["-e", "relayhost=a", "relayhost=b"],
    ["relayhost=[direct.example]"],
    ["-X", "smtpd_tls_session_cache_database", "relayhost", "nothere"],
    ["-#", "smtpd_recipient_restrictions", "relayhost"],
    ["-e", "foo"],
    ["-Me", "submission/inet=submission inet n - y - - smtpd -o smtpd_tls_security_level=encrypt"
            " -o smtpd_sasl_auth_enable=yes -o smtpd_client_restrictions=permit_sasl_authenticated,"
            "reject -o milter_macro_daemon_name=ORIGINATING"],
    ["-Me", "new/unix=new unix - n n - - pipe flags=R user=nobody argv=/bin/cat ${recipient}"],
    ["-Me", "smtp/inet=127.0.0.1:10031 inet n - n - - policy"],
    ["-MX", "smtps/inet", "scan/unix"],
    ["-M#", "submission/inet", "relay/unix"],
    ["-Pe", "submission/inet/smtpd_tls_security_level=may", "smtp/inet/syslog_name=x/y"],
    ["-PX", "submission/inet/syslog_name", "relay/unix/syslog_name"],
    ["-Pe", "nope/inet/x=1"],
    # -Fe on any field of any service line
    ["-Fe", "smtp/inet/chroot=n", "smtp/inet/private=y"],
    ["-Fe", "*/unix/chroot=n"],
    ["-Fe", "smtp/inet/command=smtpd -o smtpd_tls_security_level=none -v"],
    ["-Fe", "smtp/unix/process_limit=20", "cleanup/unix/wakeup=60?"],
    ["-Fe", "smtp/inet/service=127.0.0.1:25", "relay/unix/type=fifo"],
    ["-Fe", "nope/inet/chroot=n"], ["-Fe", "smtp/inet/private=x"],
    ["-Fe", "smtp/inet/wakeup=soon"], ["-Fe", "smtp/inet/process_limit=-1"],
    ["-Fe", "smtp/inet/private=a b"], ["-Fe", "smtp/inet/*=n"], ["-Fe", "smtp/inet=n"],
    ["-Fe", "smtp/inet/nosuch=n"], ["-F", "smtp/inet/chroot=n"], ["-P", "smtp/inet/a=b"],
    # -Pe, -PX, -MX, -M# and -Me, their wild cards and their errors
    ["-Pe", "*/inet/smtpd_tls_security_level=none"], ["-PX", "*/*/syslog_name"],
    ["-Pe", "smtp/unix/smtp_helo_timeout=5", "smtp/unix/smtp_helo_timeout=6"],
    ["-PX", "submission/inet/*"], ["-Pe", "smtp/inet/a=b c"], ["-PX", "relay/unix/syslog_name "],
    ["-MX", "*/unix"], ["-M#", "*/inet"], ["-MX", "smtp/inet/x"], ["-M#", "smtp"],
    ["-MX", "smtps/inet "],
    ["-Me", "relay/unix=smtp unix - - n - - smtp"],
    ["-Me", "smtp/inet=smtp bad n - y - - smtpd"], ["-Me", "smtp/inet=smtp inet n"],
    ["-Me", "a/b=a unix - - n - - pipe flags=R user=x argv=/bin/x {${recipient} z}"],
    # main.cf
    ["-X", "  relayhost  "], ["-X", ""], ["-X", "relayhost=x"], ["-e", "#relayhost=x"],
]


@pytest.mark.parametrize(
    "case", ["tls-sasl", "quirks", "policy", "master-edges", "debian-stock", "master-braces"]
)
@pytest.mark.parametrize("args", EDITS, ids=" ".join)
def test_edit(case: str, args: list[str], tmp_path: Path) -> None:
    theirs = copy_case(case, tmp_path / "real")
    mine = copy_case(case, tmp_path / "ours")
    r_status, r_out, r_err, _ = postconf(
        RECORDING, f"{case} edit {' '.join(args)}", theirs, *args, sort_stderr=False,
        files=("main.cf", "master.cf"),
    )
    o_status, o_out, o_err = ours(mine, *args)
    assert (o_status, o_out) == (r_status, r_out)
    assert o_err.replace(str(mine), "DIR") == r_err.replace(str(theirs), "DIR")
    for name in ("main.cf", "master.cf"):
        assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name


@pytest.mark.parametrize("case", CASES)
def test_edit_then_show_round_trip(case: str, tmp_path: Path) -> None:
    """-e / -Me then -n / -M / -P: both tools agree on the edited files."""
    directory = copy_case(case, tmp_path / case)
    names = postfix_only(directory, case)  # of the files as they are in data/
    edits = [
        ["-e", "relayhost=[relay.example]:2525", "message_size_limit=1024"],
        ["-Me", "smtp/inet=smtp inet n - y - - smtpd -o smtpd_sasl_auth_enable=no"],
    ]
    for args in edits:
        assert ours(directory, *args)[0] == 0
    age(directory)
    for args in (["-n"], ["-M"], ["-P"]):
        same(directory, f"{case} after edits", args, names, filter_stdout=args == ["-n"])


def test_several_new_names_are_appended(tmp_path: Path) -> None:
    theirs = copy_case("quirks", tmp_path / "real")
    mine = copy_case("quirks", tmp_path / "ours")
    args = ["-e", "alpha_knob=1", "zeta_knob=2", "relayhost=x"]
    postconf(RECORDING, f"quirks several {' '.join(args)}", theirs, *args, files=("main.cf",),
             sort_files=True)
    ours(mine, *args)
    real_lines = (theirs / "main.cf").read_text().splitlines()
    our_lines = (mine / "main.cf").read_text().splitlines()
    assert our_lines[-2:] == ["alpha_knob = 1", "zeta_knob = 2"]
    assert sorted(our_lines) == sorted(real_lines)


# -- notice templates (-t, -b) --------------------------------------------------------------

TEMPLATES = sorted(p.name for p in (DATA / "bounce-templates").iterdir())


@pytest.mark.parametrize("flag", ["-t", "-b"])
@pytest.mark.parametrize("template", ["built-in", *TEMPLATES])
def test_templates(flag: str, template: str, tmp_path: Path) -> None:
    """Postbus's four templates are Postfix's; a template file is read with Postfix's
    checks and messages, from $syslog_name/bounce."""
    directory = copy_case("tls-sasl", tmp_path / "tls-sasl")
    args = [flag]
    if template != "built-in":
        shutil.copy(DATA / "bounce-templates" / template, directory / template)
        args.append(str(directory / template))
    # Postfix's bounce repeats its warnings, a varying number of times.
    r_status, r_out, r_err, _ = postconf(RECORDING, f"template {flag} {template}", directory,
                                         *args, unique_stderr=True)
    o_status, o_out, o_err = ours(directory, *args)
    assert (o_status, o_out) == (r_status, r_out)
    theirs = {line.replace("postfix/bounce:", "postbus/bounce:") for line in r_err.splitlines()}
    assert set(o_err.splitlines()) == theirs


@pytest.mark.parametrize("flag", ["-t", "-b"])
@pytest.mark.parametrize("argument", [None, "", "other"])
def test_templates_of_bounce_template_file(
    flag: str, argument: str | None, tmp_path: Path
) -> None:
    """Without an argument, the templates of bounce_template_file; a file named on the
    command line instead of it; "" for the built-in ones."""
    directory = copy_case("tls-sasl", tmp_path / "tls-sasl")
    for name in ("with_delay.tmpl", "full.tmpl"):
        shutil.copy(DATA / "bounce-templates" / name, directory / name)
    with open(directory / "main.cf", "a") as main_cf:
        main_cf.write(f"bounce_template_file = {directory}/with_delay.tmpl\n")
    age(directory)
    args = [flag] if argument is None else [flag, argument and f"{directory}/full.tmpl"]
    r_status, r_out, r_err, _ = postconf(
        RECORDING, f"template_file {flag} {argument}", directory, *args, unique_stderr=True)
    o_status, o_out, o_err = ours(directory, *args)
    assert (o_status, o_out) == (r_status, r_out)
    theirs = {line.replace("postfix/bounce:", "postbus/bounce:") for line in r_err.splitlines()}
    assert set(o_err.splitlines()) == theirs
    assert ("Subject: Still trying" in o_out or "Waited 0 hours." in o_out) == (argument is None)
