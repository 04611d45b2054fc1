"""The content-filter service as an after-queue filter: DKIM signing, Authentication-Results,
the HTTP scanner's actions, kill -9 mid-job, and replicas.

Mail to filter.test is routed to the content-filter transport with transport_maps;
the filter's own master.cf line maps those recipients to remote.test with
virtual_alias_maps when it re-injects (as Postfix's re-injection smtpd may), so
the re-injected copy leaves through the relayhost (an aiosmtpd sink) instead of
coming back to the filter.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import dkim
import dns.resolver
import pytest

from tests.e2e.filter_peers import DnsPeer, ScannerPeer
from tests.e2e.peers import Peer, Received
from tests.harness import MASTER_CF, MailSystem

pytestmark = pytest.mark.e2e

FILTER_LINE = ("content-filter unix - - n - {maxproc} content-filter\n"
               "  -o virtual_alias_maps=texthash:{conf}/filter_virtual\n")
USERS = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"]


def keygen(directory: Path, domain: str, selector: str) -> tuple[Path, str]:
    """A key made by `postbus dkim keygen`; returns the key file and the TXT rdata."""
    made = subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "dkim", "keygen", "-d", domain,
         "-s", selector, "-b", "1024", "-D", str(directory)],
        capture_output=True, text=True, check=True)
    key = directory / f"{selector}.private"
    assert key.stat().st_mode & 0o777 == 0o600
    strings = re.findall(r'"([^"]*)"', made.stdout)
    assert made.stdout.startswith(f"{selector}._domainkey\tIN\tTXT\t(")
    return key, " ".join(f'"{s}"' for s in strings)


def make_system(tmp_path: Path, peer: Peer, dns_port: int, maxproc: str = "-",
                **main_cf: str) -> MailSystem:
    conf = tmp_path / "etc"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "transport").write_text("filter.test content-filter:\n")
    (conf / "filter_virtual").write_text(
        "".join(f"{u}@filter.test {u}@remote.test\n" for u in USERS))
    settings = {
        "relayhost": f"[127.0.0.1]:{peer.port}",
        "transport_maps": f"texthash:{conf}/transport",
        "postbus_dns_servers": f"127.0.0.1:{dns_port}",
        "postbus_authserv_id": "mx.postbus.test",
    }
    settings.update(main_cf)
    master = MASTER_CF + FILTER_LINE.format(maxproc=maxproc, conf=conf)
    return MailSystem(tmp_path, settings, master_cf=master)


def header(message: Received, name: str) -> list[str]:
    head = message.content.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = re.sub(r"\r\n[ \t]+", " ", head)
    return [line.split(":", 1)[1].strip() for line in unfolded.split("\r\n")
            if line.lower().startswith(name.lower() + ":")]


def dns_txt(port: int):  # type: ignore[no-untyped-def]
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]

    def lookup(name: bytes, timeout: float = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    return lookup


def test_signs_verifies_and_adds_authentication_results(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ours, our_txt = keygen(keys, "signer.test", "sel1")
    theirs, their_txt = keygen(keys, "author.test", "s2")
    zone = {
        ("sel1._domainkey.signer.test", "TXT"): [our_txt],
        ("s2._domainkey.author.test", "TXT"): [their_txt],
        ("author.test", "TXT"): ['"v=spf1 ip4:127.0.0.1 -all"'],
        ("_dmarc.author.test", "TXT"): ['"v=DMARC1; p=reject"'],
    }
    (tmp_path / "etc").mkdir(parents=True)
    (tmp_path / "etc" / "signing").write_text("signer.test signer.test:sel1:" + str(ours) + "\n")
    with DnsPeer(zone) as dnsd, Peer() as peer:
        system = make_system(
            tmp_path, peer, dnsd.port,
            postbus_dkim_signing_table=f"texthash:{tmp_path}/etc/signing").start()
        try:
            out = ("From: Sig <a@signer.test>\r\nTo: u0@filter.test\r\nSubject: signed\r\n"
                   "Message-ID: <1@signer.test>\r\nDate: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
                   "\r\nour mail\r\n")
            qid = system.send("a@signer.test", ["u0@filter.test"], out)
            inbound = (b"From: Bob <bob@author.test>\r\nTo: u1@filter.test\r\nSubject: in\r\n"
                       b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n\r\ntheir mail\r\n")
            signature = dkim.sign(inbound, b"s2", b"author.test", theirs.read_bytes(),
                                  include_headers=[b"from", b"to", b"subject", b"date"])
            forged = b"Authentication-Results: mx.postbus.test; dkim=pass header.d=bank.test\r\n"
            system.send("bob@author.test", ["u1@filter.test"], forged + signature + inbound)
            assert system.wait_for(lambda: len(peer.handler.messages) >= 2, timeout=30), \
                system.maillog.read_text()
            log = system.maillog.read_text()
        finally:
            system.stop()
        check_signed_mail(peer, dnsd.port, qid, log, signature)


def check_signed_mail(peer: Peer, dns_port: int, qid: str, log: str, signature: bytes) -> None:
    by_rcpt = {m.recipients[0]: m for m in peer.handler.messages}
    signed = by_rcpt["u0@remote.test"]
    assert dkim.verify(signed.content, dnsfunc=dns_txt(dns_port))
    assert header(signed, "DKIM-Signature")[0].count("d=signer.test") == 1
    # the filter reported the original recipient sent, naming the re-injected message
    match = re.search(rf"content-filter\[\d+\]: {qid}: to=<u0@filter.test>, "
                      r"relay=content-filter, delay=[\d.]+, "
                      r"delays=[\d./]+, dsn=2\.0\.0, "
                      r"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)", log)
    assert match, log
    assert re.search(rf"smtp\[\d+\]: {match.group(1)}: to=<u0@remote.test>, "
                     r"orig_to=<u0@filter.test>, relay=127.0.0.1.*status=sent", log), log
    assert header(signed, "Authentication-Results") == [
        "mx.postbus.test; spf=none smtp.mailfrom=a@signer.test; dmarc=none header.from=signer.test"]
    got = by_rcpt["u1@remote.test"]
    b_tag = re.search(r"\bb=([^;]{8})", signature.decode().replace("\r\n", "")).group(1)
    assert header(got, "Authentication-Results") == [
        f"mx.postbus.test; dkim=pass header.d=author.test header.s=s2 header.b={b_tag}; "
        "spf=pass smtp.mailfrom=bob@author.test; dmarc=pass (p=reject) header.from=author.test"]
    assert not header(got, "DKIM-Signature")[1:]  # theirs kept, not signed again
    assert dkim.verify(got.content, dnsfunc=dns_txt(dns_port))


def wait_log(system: MailSystem, pattern: str, timeout: float = 30) -> re.Match[str]:
    found = system.wait_for(lambda: re.search(pattern, system.maillog.read_text(), re.M),
                            timeout=timeout)
    assert found, f"{pattern!r} not logged:\n{system.maillog.read_text()}"
    return found


def send_subject(system: MailSystem, rcpt: str, subject: str) -> str:
    return system.send("a@client.test", [rcpt],
                       f"From: a@client.test\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbody\r\n")


def test_scanner_actions(tmp_path: Path) -> None:
    """reject bounces, soft reject defers, add header and rewrite subject change the
    copy; a scanner that times out gets the default action (here hold)."""
    with DnsPeer({}) as dnsd, ScannerPeer() as scanner, Peer() as peer:
        system = make_system(
            tmp_path, peer, dnsd.port, postbus_authres_verify="no",
            postbus_content_filter_scanner_url=scanner.url,
            postbus_content_filter_scanner_timeout="2s",
            postbus_content_filter_default_action="hold").start()
        try:
            rejected = send_subject(system, "u0@filter.test", "action=reject score=20")
            soft = send_subject(system, "u1@filter.test", "action=soft_reject score=9")
            send_subject(system, "u2@filter.test", "action=add_header score=6.5")
            send_subject(system, "u3@filter.test", "action=rewrite_subject score=7")
            stalled = send_subject(system, "u4@filter.test", "stall=6")
            wait_log(system, rf"content-filter\[\d+\]: {rejected}: to=<u0@filter.test>, "
                     r"relay=content-filter, .*dsn=5\.7\.1, "
                     r"status=bounced \(message content rejected \(score 20\)\)$")
            wait_log(system, rf"content-filter\[\d+\]: {soft}: to=<u1@filter.test>, "
                     r"relay=content-filter, .*dsn=4\.7\.1, "
                     r"status=deferred \(message content rejected for now \(score 9\)\)$")
            held = wait_log(system, rf"content-filter\[\d+\]: {stalled}: to=<u4@filter.test>, "
                            r"relay=content-filter, .*dsn=2\.0\.0, "
                            r"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)$").group(1)
            wait_log(system, r"content-filter\[\d+\]: warning: scanner http://\S+: timed out; "
                     r"using postbus_content_filter_default_action = hold until it answers$")
            assert system.wait_for(lambda: {"u2@remote.test", "u3@remote.test"} <= {
                m.recipients[0] for m in peer.handler.messages}, timeout=30)
            queue = system.postbus("postqueue", "-p").stdout
            assert re.search(rf"^{held}!", queue, re.M), queue
            bounce = system.wait_for(lambda: [m for m in peer.handler.messages
                                              if m.recipients == ["a@client.test"]], timeout=30)
            assert bounce, system.maillog.read_text()
        finally:
            system.stop()
    by_rcpt = {m.recipients[0]: m for m in peer.handler.messages}
    assert header(by_rcpt["u2@remote.test"], "X-Spam-Flag") == ["YES"]
    assert header(by_rcpt["u3@remote.test"], "X-Spam-Flag") == []
    assert header(by_rcpt["u3@remote.test"], "Subject") == [
        "***SPAM*** action=rewrite_subject score=7"]
    assert "u0@remote.test" not in by_rcpt and "u1@remote.test" not in by_rcpt
    first = scanner.requests[0][0]
    assert first["From"] == ["a@client.test"] and first["IP"] == ["127.0.0.1"]


def test_scanner_down_gets_default_action_logged_once(tmp_path: Path) -> None:
    closed = ScannerPeer()
    closed.server.server_close()  # nothing listens on its port
    with DnsPeer({}) as dnsd, Peer() as peer:
        system = make_system(
            tmp_path, peer, dnsd.port, postbus_authres_verify="no",
            postbus_content_filter_scanner_url=closed.url,
            postbus_content_filter_default_action="accept").start()
        try:
            for user in USERS[:3]:
                send_subject(system, f"{user}@filter.test", "down")
            assert system.wait_for(lambda: len(peer.handler.messages) >= 3, timeout=30), \
                system.maillog.read_text()
            log = system.maillog.read_text()
            port = system.children["content-filter"].metrics_port
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
                exposed = reply.read().decode()
        finally:
            system.stop()
    assert "postbus_content_filter_scanner_down 1.0" in exposed
    assert 'postbus_content_filter_checks_total{check="scanner",result="error"} 3.0' in exposed
    assert 'postbus_content_filter_actions_total{action="accept"} 3.0' in exposed
    assert 'postbus_content_filter_check_seconds_count{check="scanner"} 3.0' in exposed
    warnings = re.findall(r"warning: scanner .*: (.*); using postbus_content_filter_default_"
                          r"action = accept until it answers", log)
    assert len(warnings) == 1, log


def test_kill_content_filter_mid_job_loses_nothing(tmp_path: Path) -> None:
    with DnsPeer({}) as dnsd, ScannerPeer() as scanner, Peer() as peer:
        system = make_system(
            tmp_path, peer, dnsd.port, postbus_authres_verify="no",
            postbus_content_filter_scanner_url=scanner.url).start()
        try:
            qid = send_subject(system, "u5@filter.test", "stall=3")
            assert system.wait_for(lambda: scanner.requests, timeout=30)
            system.kill("content-filter")  # SIGKILL while the scanner holds the job
            system.restart("content-filter")
            assert system.wait_for(lambda: peer.handler.messages, timeout=60), \
                system.maillog.read_text()
            wait_log(system, rf"{qid}: to=<u5@filter.test>, relay=content-filter, "
                     r".*status=sent \(250 2\.0\.0 Ok: queued as \w+\)$")
            wait_log(system, rf"qmgr\[\d+\]: {qid}: removed$")
        finally:
            system.stop()
    assert [m.recipients for m in peer.handler.messages][:1] == [["u5@remote.test"]]
    assert len(scanner.requests) >= 2  # the job was handed out again and scanned again


def test_two_replicas_share_the_work(tmp_path: Path) -> None:
    with DnsPeer({}) as dnsd, ScannerPeer() as scanner, Peer() as peer:
        system = make_system(
            tmp_path, peer, dnsd.port, maxproc="2", postbus_authres_verify="no",
            postbus_content_filter_scanner_url=scanner.url).start()
        try:
            assert {"content-filter", "content-filter#1"} <= set(system.procs)
            for user in USERS:
                send_subject(system, f"{user}@filter.test", "stall=1")
            assert system.wait_for(lambda: len(peer.handler.messages) >= len(USERS),
                                   timeout=60), system.maillog.read_text()
            log = system.maillog.read_text()
        finally:
            system.stop()
    pids = set(re.findall(r"content-filter\[(\d+)\]: \w+: to=<u\d@filter.test>, "
                          r"relay=content-filter, .*status=sent", log))
    assert pids == {str(p.pid) for label, p in system.procs.items()
                    if label.startswith("content-filter")}, log
    assert sorted(m.recipients[0] for m in peer.handler.messages) == sorted(
        f"{u}@remote.test" for u in USERS)


def test_content_filter_sends_every_message_through_the_service_once(tmp_path: Path) -> None:
    """main.cf's content_filter = content-filter: (FILTER_README's after-queue setup with
    our own filter): the message is signed, and the re-injected copy is not filtered again."""
    key, txt = keygen(tmp_path / "keys", "signer.test", "sel1")
    (tmp_path / "etc").mkdir(parents=True)
    (tmp_path / "etc" / "signing").write_text(f"signer.test signer.test:sel1:{key}\n")
    with DnsPeer({("sel1._domainkey.signer.test", "TXT"): [txt]}) as dnsd, Peer() as peer:
        system = make_system(
            tmp_path, peer, dnsd.port, content_filter="content-filter:",
            postbus_dkim_signing_table=f"texthash:{tmp_path}/etc/signing").start()
        try:
            qid = system.send("a@signer.test", ["carol@remote.test"],
                              "From: <a@signer.test>\r\nSubject: filtered\r\n\r\nbody\r\n")
            filtered = wait_log(system, rf"content-filter\[\d+\]: {qid}: to=<carol@remote.test>, "
                                        r"relay=content-filter, .*queued as (\w+)\)")
            new = filtered.group(1)
            wait_log(system, rf"smtp\[\d+\]: {new}: to=<carol@remote.test>, "
                             r"relay=127\.0\.0\.1.*status=sent")
            log = system.maillog.read_text()
        finally:
            system.stop()
        assert not re.search(rf"content-filter\[\d+\]: {new}:", log), log
        [message] = peer.handler.messages
        assert message.recipients == ["carol@remote.test"]
        assert dkim.verify(message.content, dnsfunc=dns_txt(dnsd.port))
