"""A role that cannot start says why in one Postfix fatal line, and exits 1.

Each case runs a real role process under the service skeleton whose main
raises what a role meets at start: a configuration error (located at the
main.cf line that set the parameter), a port in use, a bug (the only case
with a traceback)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROLE = """
import asyncio, sys
from postbus.config.conv import ConfigError
from postbus.service import run

async def main(ctx):
    if sys.argv[1] == "config":
        raise ConfigError('unknown smtpd restriction: "bogus"',
                          parameter="smtpd_recipient_restrictions")
    if sys.argv[1] == "bind":
        await asyncio.start_server(lambda r, w: None, "127.0.0.1", int(sys.argv[3]))
    if sys.argv[1] == "bug":
        {}["missing"]

run("smtpd", main, needs_bus=False, argv=["-c", sys.argv[2], "-n", "smtpd"])
"""


def role(
    tmp_path: Path, case: str, *extra: str, main_cf: str = ""
) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(
        f"maillog_file = {tmp_path}/maillog\n"
        "smtpd_recipient_restrictions = permit_mynetworks, bogus\n" + main_cf
    )
    (conf / "master.cf").write_text("smtpd unix - - n - - smtpd\n")
    return subprocess.run([sys.executable, "-c", ROLE, case, str(conf), *extra],
                          capture_output=True, text=True, timeout=60)


def test_config_error_names_file_line_and_parameter(tmp_path: Path) -> None:
    result = role(tmp_path, "config")
    assert result.returncode == 1
    text = (f"fatal: {tmp_path}/etc/main.cf, line 2: parameter smtpd_recipient_restrictions:"
            ' unknown smtpd restriction: "bogus"')
    assert result.stderr.splitlines()[-1].endswith(f"]: {text}"), result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "maillog").read_text().splitlines()[-1].endswith(f"]: {text}")


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = role(tmp_path, "bind", str(port))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(
        f"postbus/smtpd[{result.stderr.split('[')[1].split(']')[0]}]:"
        f" fatal: bind 127.0.0.1 port {port}: Address already in use"), result.stderr
    assert "Traceback" not in result.stderr


def test_configuration_that_does_not_load(tmp_path: Path) -> None:
    result = role(tmp_path, "config", main_cf="smtpd_timeout = soon\n")
    assert result.returncode == 1
    text = (f"fatal: {tmp_path}/etc/main.cf, line 3: parameter smtpd_timeout:"
            " bad time value 'soon': expected a number with unit s, m, h, d or w")
    assert result.stderr.splitlines()[-1].endswith(text), result.stderr
    assert (tmp_path / "maillog").read_text().splitlines()[-1].endswith(text)


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    result = role(tmp_path, "bug")
    assert result.returncode == 1
    assert "fatal: smtpd: unexpected error (KeyError('missing'))" in result.stderr
    assert "Traceback (most recent call last):" in result.stderr
