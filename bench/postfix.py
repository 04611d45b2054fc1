"""A private Postfix instance on loopback (Debian's postfix), as a yardstick."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def available() -> bool:
    return shutil.which("postfix") is not None and Path("/etc/postfix/master.cf").exists()


class PostfixInstance:
    def __init__(self, root: Path, smtp_port: int, settings: dict[str, str]) -> None:
        self.root = root
        self.etc = root / "etc"
        self.smtp_port = smtp_port
        self.maillog = root / "maillog"
        self.etc.mkdir(parents=True, exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        (root / "spool").mkdir(exist_ok=True)
        shutil.chown(root / "data", "postfix")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(root / "spool"),
            "data_directory": str(root / "data"),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(root),
            "mydestination": "localhost",
            "myhostname": "postfix.bench.test",
            "mynetworks": "127.0.0.0/8",
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_peername_lookup": "no" if self._has_param("smtpd_peername_lookup") else "",
        }
        main.update(settings)
        (self.etc / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in main.items() if v != "")
        )
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        out = []
        for line in master:
            if line.startswith("smtp      inet"):
                line = line.replace("smtp      inet", f"127.0.0.1:{smtp_port} inet", 1)
            if line.startswith("#postlog"):
                line = line[1:]
            out.append(line)
        (self.etc / "master.cf").write_text("\n".join(out) + "\n")
        self.env = {**os.environ, "MAIL_CONFIG": str(self.etc)}

    @staticmethod
    def _has_param(name: str) -> bool:
        out = subprocess.run(["postconf", "-d", name], capture_output=True, text=True)
        return out.returncode == 0 and "unknown parameter" not in out.stderr

    def start(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "check"], check=False, env=self.env)
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True, env=self.env,
                       capture_output=True)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False, env=self.env,
                       capture_output=True)
