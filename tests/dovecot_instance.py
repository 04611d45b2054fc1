"""A private Dovecot auth server on loopback for SMTP AUTH tests (Debian's dovecot-core).

Its own configuration, base and state directories in a private temporary
directory (removed at stop), never the system's: ``service auth`` with an inet listener on a
free loopback port and a unix listener in the directory, a passwd-file of
test users with plain passwords, no failure delay and no auth penalty.  Started in the
foreground (``dovecot -F -c``) and stopped by its process id.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from postbus.servers import free_port

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot"
                                      if os.path.exists("/usr/sbin/dovecot") else None)

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
auth_verbose = yes
{users}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={root}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener {root}/auth {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
  # no penalty delays: auth cannot reach anvil (every test client is 127.0.0.1)
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def private_root() -> Path:
    """A directory of its own in /tmp (0755): pytest's tmp_path lies in 0700 directories
    that another pytest session may make 0700 again at any time, and Dovecot's auth
    worker, which runs as the dovecot user, must read the users file."""
    root = Path(tempfile.mkdtemp(prefix="postbus-dovecot-"))
    root.chmod(0o755)
    return root


@dataclass
class Dovecot:
    users: dict[str, str]
    root: Path = field(default_factory=private_root)
    mechanisms: str = "plain login"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.root / "auth"

    def start(self) -> Dovecot:
        assert DOVECOT is not None
        for sub in ("run", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "users").write_text(
            "".join(f"{name}:{{PLAIN}}{pw}\n" for name, pw in self.users.items()))
        own = "" if os.getuid() == 0 else "".join(  # not root: Dovecot runs as ourselves
            f"{name} = {value}\n" for name, value in (
                ("default_internal_user", pwd.getpwuid(os.getuid()).pw_name),
                ("default_internal_group", grp.getgrgid(os.getgid()).gr_name),
                ("default_login_user", pwd.getpwuid(os.getuid()).pw_name)))
        conf = self.root / "dovecot.conf"
        conf.write_text(CONFIG.format(root=self.root, port=self.port, users=own,
                                     mechanisms=self.mechanisms))
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dovecot exited: {err} {self.log()}")
            if self.socket_path.exists() and listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not start: {self.log()}")

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop Dovecot and its children (its own process group: the auth process would
        otherwise serve open connections a while after the master is gone)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children still in the group
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)


def listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
