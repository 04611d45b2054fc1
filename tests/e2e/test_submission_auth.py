"""A submission service in master.cf, as Postfix admins write it (issue #11, item 3):

    submission inet n - n - - smtpd
      -o smtpd_tls_security_level=encrypt
      -o smtpd_sasl_auth_enable=yes
      -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject

(on a free loopback port instead of 587), with the built-in user store: a user added
with ``postbus saslpasswd``, swaks sending authenticated mail through STARTTLS, the
message delivered with ``with ESMTPSA`` and the Authenticated sender comment, and the
refusals without TLS, without AUTH and with a wrong password.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbus.servers import free_port
from tests.harness import MASTER_CF, MailSystem
from tests.tls_certs import Pki

pytestmark = pytest.mark.e2e

SWAKS = shutil.which("swaks")


@pytest.fixture
def system(shared_tmp_path: Path) -> Iterator[tuple[MailSystem, int]]:
    pki = Pki.create(shared_tmp_path / "pki")
    cert, key = pki.server("server")
    for path in (shared_tmp_path / "pki", cert, key):
        path.chmod(0o755 if path.is_dir() else 0o644)
    submission = free_port()
    master = MASTER_CF + (
        f"127.0.0.1:{submission} inet n - n - - smtpd\n"
        "  -o smtpd_tls_security_level=encrypt\n"
        "  -o smtpd_sasl_auth_enable=yes\n"
        "  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject\n"
    )
    system = MailSystem(shared_tmp_path, {
        "smtpd_sasl_type": "postbus",
        "smtpd_sasl_authenticated_header": "yes",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": str(cert),
        "smtpd_tls_key_file": str(key),
    }, master_cf=master)
    system.start()
    try:
        yield system, submission
    finally:
        system.stop()


def saslpasswd(system: MailSystem, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(system.conf), "saslpasswd", *args],
        capture_output=True, text=True, timeout=60, input=stdin)


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    assert SWAKS is not None
    return subprocess.run(
        [SWAKS, "--server", "127.0.0.1", "--port", str(port), "--from", "alice@postbus.test",
         "--to", "bob@postbus.test", "--helo", "client.postbus.test", *args],
        capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")
def test_authenticated_submission_with_swaks(system: tuple[MailSystem, int]) -> None:
    mail, port = system
    added = saslpasswd(mail, "add", "alice", stdin="s3cret\n")
    assert added.returncode == 0, added.stderr
    assert saslpasswd(mail, "add", "carol", stdin="x\n").returncode == 0
    listed = saslpasswd(mail, "list")
    assert listed.stdout.split() == ["alice", "carol"]
    assert saslpasswd(mail, "delete", "carol").returncode == 0
    gone = saslpasswd(mail, "delete", "carol")
    assert gone.returncode == 1 and "user carol not found" in gone.stderr
    assert saslpasswd(mail, "list").stdout.split() == ["alice"]

    plain = swaks(port, "--quit-after", "MAIL")
    assert "530 5.7.0 Must issue a STARTTLS command first" in plain.stdout
    unauth = swaks(port, "--tls")
    assert "554 5.7.1 <bob@postbus.test>: Recipient address rejected: Access denied" \
        in unauth.stdout, unauth.stdout
    wrong = swaks(port, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                  "--auth-password", "wrong")
    assert "535 5.7.8 Error: authentication failed: (reason unavailable)" in wrong.stdout
    sent = swaks(port, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                 "--auth-password", "s3cret", "--header", "Subject: submitted")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "235 2.7.0 Authentication successful" in sent.stdout
    login = swaks(port, "--tls", "--auth", "LOGIN", "--auth-user", "alice",
                  "--auth-password", "s3cret", "--header", "Subject: by login")
    assert login.returncode == 0, login.stdout + login.stderr

    mail.wait_for(lambda: len(list(mail.maildir("bob").glob("*"))) >= 2, timeout=20)
    files = sorted(mail.maildir("bob").glob("*"))
    assert len(files) == 2, mail.maillog.read_text()
    subjects = set()
    for path in files:
        msg = email.message_from_bytes(path.read_bytes())
        subjects.add(msg["Subject"])
        received = msg.get_all("Received")[0]
        assert "(Authenticated sender: alice)" in received
        assert " with ESMTPSA id " in received
    assert subjects == {"submitted", "by login"}
    log = mail.maillog.read_text()
    assert "sasl_method=PLAIN, sasl_username=alice" in log
    assert "sasl_method=LOGIN, sasl_username=alice" in log
    assert "SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice" in log
