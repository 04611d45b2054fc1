"""A real OpenDKIM (Debian's opendkim, opendkim-tools) as a signing milter on loopback.

The key is made by opendkim-genkey for ``example.org``, selector ``test``; the
public key record is returned so dkimpy can verify without DNS (its dnsfunc).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from postbus.servers import free_port


@dataclass
class OpenDkim:
    port: int
    txt: bytes  # the DKIM key record for test._domainkey.example.org

    @property
    def name(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes:
        return self.txt if name.rstrip(b".") == b"test._domainkey.example.org" else b""


def available() -> bool:
    return bool(shutil.which("opendkim") and shutil.which("opendkim-genkey"))


@contextlib.asynccontextmanager
async def opendkim(tmp: Path) -> AsyncIterator[OpenDkim]:
    subprocess.run(["opendkim-genkey", "-D", str(tmp), "-d", "example.org", "-s", "test"],
                   check=True)
    record = (tmp / "test.txt").read_text()
    txt = "".join(re.findall(r'"([^"]*)"', record)).encode()
    port = free_port()
    conf = tmp / "opendkim.conf"
    conf.write_text(f"Mode s\nDomain example.org\nSelector test\nKeyFile {tmp}/test.private\n"
                    f"Socket inet:{port}@127.0.0.1\nSyslog no\nRequireSafeKeys no\n"
                    "Canonicalization relaxed/simple\n")
    proc = await asyncio.create_subprocess_exec(
        "opendkim", "-f", "-x", str(conf), "-P", str(tmp / "pid"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):  # wait for the port, not a fixed time
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if proc.returncode is not None:
                        raise RuntimeError("opendkim exited: "
                                           f"{(await proc.stderr.read()).decode()}") from None  # type: ignore[union-attr]
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield OpenDkim(port, txt)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
