"""LMTP: the replies after DATA, one per accepted recipient, give one outcome each.

Against a real Dovecot LMTP server (Debian's dovecot-core and dovecot-lmtpd,
started by the test on loopback and on a UNIX-domain socket, users from a
passwd-file, a quota that one of them is over) and against an aiosmtpd LMTP
server that answers 250, 550 and 451 after DATA for different recipients.

As root Dovecot runs as it is installed (its processes as the users dovecot and
dovenull, the mail written as a virtual uid); as any other user it runs as that
user throughout (its internal and login users, and the mail users' uid and gid),
which Dovecot allows: the same test runs either way.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from delivery_smtp.__main__ import main
from postbus.servers import free_port
from tests.dovecot_instance import listening

from .conftest import Bus, RunAgent
from .localfs import ROOT, VIRTUAL_ID, give
from .peers import Handler, Peer

pytestmark = pytest.mark.integration

FAST = {"smtp_connection_cache_time_limit": "2s", "myhostname": "mail.postbus.test"}

DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
auth_username_format = %Ln
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_plugins = quota
postmaster_address = postmaster@dove.test
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
plugin {{
  quota = maildir:User quota
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service anvil {{
  # no chroot: only root may chroot, and the tests need no jail
  chroot =
}}
"""


@dataclass
class Dovecot:
    root: Path
    port: int

    @property
    def socket(self) -> Path:
        return self.root / "run" / "lmtp"

    def maildir(self, user: str) -> list[bytes]:
        new = self.root / "mail" / user / "Maildir" / "new"
        return [p.read_bytes() for p in new.iterdir()] if new.is_dir() else []


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """Dovecot's LMTP on a free loopback port: bob and carol exist, carol is over quota."""
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(binary).exists() or not Path("/usr/lib/dovecot/lmtp").exists():
        pytest.skip("dovecot is not installed (Debian packages dovecot-core, dovecot-lmtpd)")
    root = Path(tempfile.mkdtemp(prefix="postbus-dovecot-"))  # Dovecot's users must enter it
    root.chmod(0o755)
    (root / "mail").mkdir()
    if ROOT:
        users = {"internal_user": "dovecot", "internal_group": "dovecot",
                 "login_user": "dovenull"}
        uid = gid = VIRTUAL_ID
        give(root / "mail", VIRTUAL_ID, VIRTUAL_ID)
    else:  # all of it as ourselves
        me = pwd.getpwuid(os.getuid()).pw_name
        users = {"internal_user": me, "internal_group": grp.getgrgid(os.getgid()).gr_name,
                 "login_user": me}
        uid, gid = os.getuid(), os.getgid()
    (root / "users").write_text(
        f"bob::{uid}:{gid}::{root}/mail/bob::\n"
        f"carol::{uid}:{gid}::{root}/mail/carol::userdb_quota_rule=*:storage=1\n"
    )
    port = free_port()
    (root / "dovecot.conf").write_text(DOVECOT_CONF.format(root=root, port=port, **users))
    err = root / "dovecot.err"
    with open(err, "wb") as out:
        proc = subprocess.Popen([binary, "-F", "-c", str(root / "dovecot.conf")],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (root / "run" / "lmtp").exists() or not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = root / "dovecot.log"
                pytest.fail(f"Dovecot's LMTP did not start: {err.read_text()}"
                            f"{log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
        yield Dovecot(root, port)
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(root, ignore_errors=True)


BIG = (b"From: alice@postbus.test\r\nTo: bob@dove.test\r\nSubject: lmtp\r\n"
       b"Message-ID: <lmtp@postbus.test>\r\n\r\n" + (b"x" * 100 + b"\r\n") * 30)


@pytest.mark.parametrize("over", ["inet", "unix"])
async def test_dovecot_gives_each_recipient_its_own_outcome(
    bus: Bus, run_agent: RunAgent, dovecot: Dovecot, over: str
) -> None:
    nexthop = (f"inet:127.0.0.1:{dovecot.port}" if over == "inet"
               else f"unix:{dovecot.socket}")
    name = ("127.0.0.1[127.0.0.1]" if over == "inet"
            else f"mail.postbus.test[{dovecot.socket}]")
    # a UNIX-domain server is named after myhostname, whatever LHLO says (as Postfix)
    await run_agent(main, "lmtp", {**FAST, "lmtp_lhlo_name": "lhlo.postbus.test"})
    job = await bus.submit("lmtp", nexthop,
                           ["bob@dove.test", "nobody@dove.test", "carol@dove.test"], content=BIG)
    bob, nobody, carol = (await bus.status(job.queue_id)).results
    await run_agent.stop()
    assert (bob.status, bob.dsn) == ("sent", "2.0.0")
    assert bob.reason.startswith("250 2.0.0 <bob@dove.test> ") and bob.reason.endswith(" Saved")
    assert (nobody.status, nobody.dsn, nobody.reason) == (
        "bounced", "5.1.1",
        f"host {name} said: 550 5.1.1 <nobody@dove.test> User doesn't exist: nobody@dove.test "
        "(in reply to RCPT TO command)",
    )
    assert (carol.status, carol.dsn, carol.reason) == (
        "bounced", "5.2.2",
        f"host {name} said: 552 5.2.2 <carol@dove.test> Quota exceeded (mailbox for user is "
        "full) (in reply to end of DATA command)",
    )
    [saved] = dovecot.maildir("bob")
    assert saved.endswith(b"\n\n" + (b"x" * 100 + b"\n") * 30)
    assert dovecot.maildir("carol") == []


async def test_replies_250_550_451_after_data_are_sent_bounced_deferred(
    bus: Bus, run_agent: RunAgent
) -> None:
    handler = Handler(
        rcpt_replies={"dave@postbus.test": "550 5.1.1 <dave@postbus.test> unknown"},
        data_reply="250 2.0.0 <bob@postbus.test> Saved\r\n"
                   "550 5.2.1 <carol@postbus.test> Mailbox disabled\r\n"
                   "451 4.3.0 <erin@postbus.test> Try again later",
    )
    with Peer(handler, lmtp=True) as peer:
        await run_agent(main, "lmtp", FAST)
        rcpts = ["bob@postbus.test", "carol@postbus.test", "dave@postbus.test",
                 "erin@postbus.test"]
        job = await bus.submit("lmtp", f"inet:127.0.0.1:{peer.port}", rcpts)
        results = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    said = "host 127.0.0.1[127.0.0.1] said: "
    assert [(r.index, r.status, r.dsn, r.reason) for r in results] == [
        (0, "sent", "2.0.0", "250 2.0.0 <bob@postbus.test> Saved"),
        (1, "bounced", "5.2.1",
         said + "550 5.2.1 <carol@postbus.test> Mailbox disabled "
         "(in reply to end of DATA command)"),
        (2, "bounced", "5.1.1",
         said + "550 5.1.1 <dave@postbus.test> unknown (in reply to RCPT TO command)"),
        (3, "deferred", "4.3.0",
         said + "451 4.3.0 <erin@postbus.test> Try again later (in reply to end of DATA command)"),
    ]
    [(_, accepted, _)] = peer.handler.messages
    assert accepted == ["bob@postbus.test", "carol@postbus.test", "erin@postbus.test"]


async def test_lmtp_generic_maps_rewrite_the_lmtp_envelope_and_headers(
    bus: Bus, run_agent: RunAgent
) -> None:
    content = b"From: alice@postbus.test\r\nTo: bob@postbus.test\r\nSubject: g\r\n\r\nbody\r\n"
    with Peer(Handler(data_reply="250 2.0.0 <x> Saved"), lmtp=True) as peer:
        await run_agent(main, "lmtp", {
            **FAST, "lmtp_generic_maps": "inline:{ @postbus.test=@mail.example }",
            "smtp_generic_maps": "inline:{ @postbus.test=@wrong.example }",  # the smtp one
        })
        job = await bus.submit("lmtp", f"inet:127.0.0.1:{peer.port}", ["bob@postbus.test"],
                               content=content)
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert result.status == "sent"
    [(sender, rcpts, got)] = peer.handler.messages
    assert (sender, rcpts) == ("alice@mail.example", ["bob@mail.example"])
    assert got.startswith(b"From: alice@mail.example\r\nTo: bob@mail.example\r\n")
