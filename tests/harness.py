"""Run a whole Postbus system as real processes for end-to-end tests and the bench.

A MailSystem writes a main.cf/master.cf into a temporary directory, starts
its own nats-server and redis-server on free loopback ports, and runs each
master.cf role with the same command line `postbus start` uses, so a test
can kill -9 one role and start it again.

Local mail goes to the users of a local_recipient_maps table (LOCAL_USERS);
smtpd rejects other local names. As root the local agent writes with
mail_owner's rights (MAIL_OWNER), so the spool then lies under a 0755
directory of its own: pytest's tmp_path is under a 0700 root directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from nats.js.errors import NotFoundError

from postbus.bus import subjects as s
from postbus.bus.jetstream import connect
from postbus.config.loader import Config
from postbus.master_plan import Child, plan
from postbus.servers import ServerProcess, free_port, nats_server, redis_server

MASTER_CF = """\
127.0.0.1:{smtp_port} inet n - n - - smtpd
qmgr      unix  n       -       n       300     1       qmgr
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
"""

#: Local users the e2e tests and the bench send to (a texthash table; the value is unused).
LOCAL_USERS = ["postmaster", "alice", "bob", "carol"]
#: mail_owner: an unprivileged account every Debian system has, not default_privs (nobody).
MAIL_OWNER = "daemon"


def replicated(qmgrs: int, agents: int) -> str:
    """The harness's master.cf with ``qmgrs`` qmgr and ``agents`` smtp processes."""
    text = re.sub(r"^(qmgr\s+unix\s+n\s+-\s+n\s+300\s+)1", rf"\g<1>{qmgrs}", MASTER_CF, flags=re.M)
    return re.sub(r"^(smtp\s+unix\s+-\s+-\s+n\s+-\s+)-", rf"\g<1>{agents}", text, flags=re.M)


class MailSystem:
    def __init__(self, root: Path, main_cf: dict[str, str] | None = None,
                 master_cf: str | None = None) -> None:
        self.root = root
        self.conf = root / "etc"
        self.data = root / "data"
        self.mailroot: Path | None = None
        if os.geteuid() == 0:  # the spool must be reachable by mail_owner
            self.mailroot = Path(tempfile.mkdtemp(prefix="postbus-mail-"))
            self.mailroot.chmod(0o755)
        self.mail = (self.mailroot or root) / "mail"
        self.smtp_port = free_port()
        self.nats_port = free_port()
        self.redis_port = free_port()
        settings = {
            "myhostname": "mail.postbus.test",
            "mydomain": "postbus.test",
            "mydestination": "$myhostname, localhost, postbus.test",
            "inet_interfaces": "loopback-only",
            "mynetworks": "127.0.0.0/8",
            "data_directory": str(self.data),
            "queue_directory": str(self.data / "queue"),
            "mail_spool_directory": f"{self.mail}/",
            "home_mailbox": "",
            "local_recipient_maps": f"texthash:{self.conf}/local_users",
            "mail_owner": MAIL_OWNER,
            "alias_maps": "",
            "maillog_file": str(root / "maillog"),
            "disable_dns_lookups": "yes",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "postbus_ack_wait": "5s",
            "postbus_nats_url": f"nats://127.0.0.1:{self.nats_port}",
            "postbus_redis_url": f"redis://127.0.0.1:{self.redis_port}/0",
        }
        settings.update(main_cf or {})
        self.conf.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        (self.conf / "local_users").write_text("".join(f"{u} ok\n" for u in LOCAL_USERS))
        (self.conf / "master.cf").write_text(
            (master_cf or MASTER_CF).format(smtp_port=self.smtp_port)
        )
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if "postbus_metrics_port" not in settings:  # a port per role, none another server's
            roles = len(plan(Config.load(self.conf))[0])
            settings["postbus_metrics_port"] = str(free_port(span=max(roles, 1)))
            (self.conf / "main.cf").write_text(
                "".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.metrics_base = int(settings["postbus_metrics_port"])
        self.cfg = Config.load(self.conf)
        self.children = {c.label: c for c in plan(self.cfg)[0]}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nats: ServerProcess = nats_server(self.data / "nats", port=self.nats_port)
        self.redis: ServerProcess = redis_server(self.data / "redis", port=self.redis_port)

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def start(self, only: list[str] | None = None) -> MailSystem:
        self.nats.start()
        self.redis.start()
        for label in self.children:
            if only is None or label in only:
                self.start_role(label)
        for label in self.procs:
            self.wait_ready(label)
        return self

    def start_role(self, label: str) -> subprocess.Popen[bytes]:
        child = self.children[label]
        log = open(self.root / f"{label.replace(':', '_')}.out", "ab")  # noqa: SIM115
        proc = subprocess.Popen(child.argv(self.conf), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[label] = proc
        return proc

    def wait_ready(self, label: str, timeout: float = 30.0) -> None:
        child: Child = self.children[label]
        url = f"http://127.0.0.1:{child.metrics_port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[label]
            if proc.poll() is not None:
                raise RuntimeError(f"{label} exited with {proc.returncode}: {self.output(label)}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{label} not ready: {self.output(label)}")

    def output(self, label: str) -> str:
        path = self.root / f"{label.replace(':', '_')}.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[label]
        os.kill(proc.pid, sig)
        proc.wait(20)

    def restart(self, label: str) -> None:
        self.start_role(label)
        self.wait_ready(label)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.nats.stop()
        self.redis.stop()
        if self.mailroot is not None:
            shutil.rmtree(self.mailroot, ignore_errors=True)

    def send(self, sender: str, recipients: list[str], message: bytes | str) -> str:
        """Send one message over SMTP; returns the queue ID from the 250 reply."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
            client.ehlo("client.postbus.test")
            client.mail(sender)
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                assert code == 250, (code, text)
            code, text = client.data(message)
            assert code == 250, (code, text)
            return text.decode().rsplit(" ", 1)[-1]

    def postbus(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A postbus command (postqueue, postsuper ...) on this system's configuration."""
        return subprocess.run(
            [sys.executable, "-m", "postbus.cli.main", "-c", str(self.conf), *args],
            capture_output=True, text=True, timeout=60,
        )

    def quiet(self) -> bool:
        """Nothing queued and nothing in flight: no job, result or open attempt is left
        that could still deliver (for exactly-once checks)."""

        async def check() -> bool:
            nc = await connect(self.nats.url, "quiet", connect_timeout=5)
            try:
                js = nc.jetstream()
                try:
                    work = await js.stream_info(s.WORK_STREAM)
                except NotFoundError:
                    return False  # a nats-server restart took it; the roles declare it again
                queued = await js.stream_info(s.QUEUE_STREAM, subjects_filter=s.MSG_TRIGGER_FILTER)
                taken = await js.consumer_info(s.QUEUE_STREAM, s.QMGR_INCOMING_CONSUMER)
                return (work.state.messages == 0 and not queued.state.subjects
                        and taken.num_ack_pending == 0 and taken.num_pending == 0)
            finally:
                await nc.close()

        return asyncio.run(check())

    def maildir(self, user: str) -> Path:
        return self.mail / user / "new"

    def wait_for(self, check, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                return result
            time.sleep(interval)
