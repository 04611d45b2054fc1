"""A private Postfix instance on loopback (Debian's postfix): the reference
the tests compare against and the yardstick of `make bench`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

POSTFIX = shutil.which("postfix") or (
    "/usr/sbin/postfix" if os.access("/usr/sbin/postfix", os.X_OK) else None
)


def available() -> bool:
    """Postfix is installed and we may start it (its daemons need root to start).

    ``POSTBUS_NO_LIVE_POSTFIX=1`` pretends it is not, to run on the recordings alone."""
    if os.environ.get("POSTBUS_NO_LIVE_POSTFIX") == "1":
        return False
    return POSTFIX is not None and Path("/etc/postfix/master.cf").exists() and os.geteuid() == 0


class PostfixInstance:
    """``main.cf`` settings on top of a loopback-only base; SMTP on ``smtp_port``.

    The directory is made outside pytest's 0700 temporary directories,
    because Postfix's daemons run as user postfix and must enter it.
    """

    def __init__(self, smtp_port: int, settings: dict[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="postbus-postfix-"))
        self.root.chmod(0o755)
        self.etc = self.root / "etc"
        self.smtp_port = smtp_port
        self.maillog = self.root / "maillog"
        for sub in ("etc", "spool", "data"):
            (self.root / sub).mkdir()
        shutil.chown(self.root / "data", "postfix")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.root / "spool"),
            "data_directory": str(self.root / "data"),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "mydestination": "localhost",
            "mynetworks": "127.0.0.0/8",
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",
            "alias_maps": "",
            "alias_database": "",
            **settings,
        }
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        master = Path("/etc/postfix/master.cf").read_text()
        master = re.sub(r"(?m)^smtp(\s+)inet", f"127.0.0.1:{smtp_port}\\1inet", master)
        master = re.sub(r"(?m)^#postlog", "postlog", master)
        (self.etc / "master.cf").write_text(master)

    def start(self) -> None:
        assert POSTFIX is not None
        subprocess.run([POSTFIX, "-c", str(self.etc), "check"], check=True, capture_output=True)
        subprocess.run([POSTFIX, "-c", str(self.etc), "start"], check=True, capture_output=True)

    def stop(self) -> None:
        if POSTFIX is not None:
            subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
