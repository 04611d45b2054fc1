"""A real OpenDKIM (Debian's opendkim, opendkim-tools) as a signing milter on loopback.

The key is made by opendkim-genkey for ``domain``, selector ``test``; the public
key record is kept so that dkimpy can verify without DNS (its ``dnsfunc``).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from postbus.servers import free_port, wait_port


@dataclass
class OpenDkim:
    port: int
    domain: str
    txt: bytes  # the DKIM key record of test._domainkey.<domain>

    @property
    def name(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes:
        wanted = f"test._domainkey.{self.domain}".encode()
        return self.txt if name.rstrip(b".") == wanted else b""


def available() -> bool:
    return bool(shutil.which("opendkim") and shutil.which("opendkim-genkey"))


@contextlib.contextmanager
def opendkim(tmp: Path, domain: str = "example.org") -> Iterator[OpenDkim]:
    tmp.mkdir(parents=True, exist_ok=True)
    subprocess.run(["opendkim-genkey", "-D", str(tmp), "-d", domain, "-s", "test"], check=True)
    record = (tmp / "test.txt").read_text()
    txt = "".join(re.findall(r'"([^"]*)"', record)).encode()
    port = free_port()
    conf = tmp / "opendkim.conf"
    conf.write_text(f"Mode s\nDomain {domain}\nSelector test\nKeyFile {tmp}/test.private\n"
                    f"Socket inet:{port}@127.0.0.1\nSyslog no\nRequireSafeKeys no\n"
                    "Canonicalization relaxed/simple\n")
    proc = subprocess.Popen(["opendkim", "-f", "-x", str(conf), "-P", str(tmp / "pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 30)  # the port, not a fixed time
        yield OpenDkim(port, domain, txt)
    finally:
        proc.terminate()
        proc.wait(10)
