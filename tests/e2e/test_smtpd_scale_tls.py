"""`postbus start` with Postfix's TLS settings and maxproc > 1 (issue #11, items 2 and 7):
three smtpd processes share one port (SO_REUSEPORT) under the master's supervision,
STARTTLS and TLS on connect (port 465 style, ``-o smtpd_tls_wrappermode=yes``) with the
key in a Debian-like ``/etc/ssl/private`` (root:ssl-cert 0710, key 0640), and an
SMTPUTF8 message delivered locally and relayed to an SMTPUTF8 peer.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import signal
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from postbus.servers import free_port
from tests.e2e.peers import PeerHandler
from tests.e2e.test_postbus_start import REPO, ROOT, postbus, sample_config, state, wait_for
from tests.tls_certs import Pki

pytestmark = pytest.mark.e2e

SWAKS = shutil.which("swaks")


def private_key_dir(root: Path, pki: Pki) -> tuple[Path, Path]:
    """Cert and key the way Debian keeps the snakeoil pair."""
    cert, key = pki.server("snakeoil")
    private = root / "private"
    private.mkdir()
    shutil.move(key, private / "snakeoil.key")
    key = private / "snakeoil.key"
    cert.chmod(0o644)
    key.chmod(0o640)
    private.chmod(0o710)
    if ROOT:
        group = grp.getgrnam("ssl-cert").gr_gid
        for path in (private, key):
            os.chown(path, 0, group)
    return cert, key


@pytest.fixture
def system(shared_tmp_path: Path) -> Iterator[dict[str, Any]]:
    pki = Pki.create(shared_tmp_path / "pki")
    (shared_tmp_path / "pki").chmod(0o755)
    cert, key = private_key_dir(shared_tmp_path, pki)
    peer = PeerHandler()
    peer_port = free_port()
    controller = Controller(peer, hostname="127.0.0.1", port=peer_port, enable_SMTPUTF8=True,
                            decode_data=False)
    controller.start()
    smtps = free_port()
    master = (REPO / "etc/postbus/master.cf").read_text()
    master = re.sub(r"(?m)^(127\.0\.0\.1:2525 inet +n +- +n +- +)- ( +smtpd)$", r"\g<1>3\2",
                    master)
    assert re.search(r"(?m)^127\.0\.0\.1:2525 .* 3 +smtpd$", master), master
    master += f"127.0.0.1:{smtps} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n"
    conf, port = sample_config(shared_tmp_path, (
        "compatibility_level = 3.6\n"  # as Debian's main.cf: smtputf8_enable = yes
        "service_throttle_time = 2s\n"
        "smtpd_tls_security_level = may\n"
        f"smtpd_tls_cert_file = {cert}\n"
        f"smtpd_tls_key_file = {key}\n"
        "smtpd_tls_received_header = yes\n"
        "smtpd_tls_loglevel = 1\n"
        f"relayhost = [127.0.0.1]:{peer_port}\n"
    ), master_cf=master)
    started = postbus(conf, "start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"conf": conf, "root": shared_tmp_path, "port": port, "smtps": smtps,
               "peer": peer, "pki": pki, "status": started.stdout}
    finally:
        postbus(conf, "stop")
        controller.stop()


def exited(pid: int) -> bool:
    """Gone, or every thread of it a zombie. The main thread alone is not enough: its
    files (the listening socket) close when the last thread exits, and uvloop's worker
    threads can outlive it by a moment, in which the kernel still hands that socket
    new connections, then resets them."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return True
    for task in tasks:
        try:
            if "State:\tZ" not in (task / "status").read_text():
                return False
        except FileNotFoundError:
            continue
    return True


def smtpd_children(root: Path, port: int) -> list[dict[str, Any]]:
    return [c for c in state(root).get("children", [])
            if c["module"] == "ingress_smtpd" and c["listen"].endswith(f":{port}")]


def test_three_smtpd_processes_share_one_port_and_are_supervised(
    system: dict[str, Any]
) -> None:
    root, port = system["root"], system["port"]
    children = smtpd_children(root, port)
    assert [c["label"] for c in children] == [
        f"127.0.0.1:{port}", f"127.0.0.1:{port}#1", f"127.0.0.1:{port}#2"]
    assert all(c["state"] == "running" for c in children), children
    for _ in range(40):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            assert client.ehlo("client.example")[0] == 250
    maillog = (root / "var/maillog").read_text()
    pids = {int(p) for p in re.findall(r"postbus/smtpd\[(\d+)\]: connect from", maillog)}
    assert len(pids & {c["pid"] for c in children}) >= 2, pids
    # one dies: the others keep the port; the master starts it again. (A connection the
    # kernel queued on the dying process's socket in the instant before it closed is
    # lost: SO_REUSEPORT keeps one accept queue per process.)
    victim = children[1]
    os.kill(victim["pid"], signal.SIGKILL)
    assert wait_for(lambda: exited(victim["pid"]))
    for _ in range(10):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            assert client.noop()[0] == 250
    again = wait_for(lambda: [c for c in smtpd_children(root, port)
                              if c["label"] == victim["label"] and c["state"] == "running"
                              and c["pid"] != victim["pid"]], timeout=30)
    assert again, smtpd_children(root, port)
    status = postbus(system["conf"], "status").stdout
    assert len(re.findall(rf"^  127\.0\.0\.1:{port}(#\d)? +running +pid \d+ ", status,
                          re.M)) == 3, status


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")
def test_starttls_and_tls_on_connect_with_a_key_only_ssl_cert_may_read(
    system: dict[str, Any]
) -> None:
    root = system["root"]
    common = ["--server", "127.0.0.1", "--from", "alice@example.com", "--to", "bob@postbus.test"]
    for args in (["--port", str(system["port"]), "--tls"],
                 ["--port", str(system["smtps"]), "--tls-on-connect"]):
        done = subprocess.run([SWAKS, *common, *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    maildir = root / "var/mail/bob/new"
    assert wait_for(lambda: maildir.exists() and len(list(maildir.iterdir())) == 2)
    for message in maildir.iterdir():
        text = message.read_bytes()
        assert b"\n\t(using TLSv1.3 with cipher " in text.replace(b"\r\n", b"\n")
        assert b" with ESMTPS id " in text
    log = (root / "var/maillog").read_text()
    assert "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3" in log
    assert "disabling TLS support" not in log


def test_smtputf8_envelope_end_to_end(system: dict[str, Any]) -> None:
    root, peer = system["root"], system["peer"]
    sender = "\u00e5lice@ex\u00e4mple.test"
    remote = "\u043a\u0430\u0440\u043b@remote.test"
    context = system["pki"].client_context()
    context.check_hostname = False
    with smtplib.SMTP("127.0.0.1", system["port"], timeout=30) as client:
        client.ehlo("client.example")
        client.starttls(context=context)
        client.ehlo("client.example")
        refused = client.sendmail(sender, ["bob@postbus.test", remote],
                                  "Subject: utf8\r\n\r\nh\u00e9llo\r\n".encode(),
                                  mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {}
    maildir = root / "var/mail/bob/new"
    assert wait_for(lambda: maildir.exists() and any(maildir.iterdir()))
    text = next(maildir.iterdir()).read_bytes().decode("utf-8")
    assert f"Return-Path: <{sender}>" in text
    assert " with UTF8SMTPS id " in text
    assert "h\u00e9llo" in text
    got = wait_for(lambda: peer.messages, timeout=15)
    assert got, (root / "var/maillog").read_text()
    assert got[0].sender == sender
    assert got[0].recipients == [remote]
    assert "h\u00e9llo".encode() in got[0].content
