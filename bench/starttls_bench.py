"""STARTTLS handshakes per second of one ingress-smtpd process, and of Postfix beside it.

Each session is EHLO, STARTTLS, the TLS handshake (TLS 1.3, RSA 2048 server key,
X25519), EHLO again, QUIT: the cost of offering TLS to every client. The server
runs as production does (its own process, uvloop); the clients run in other
processes. Two figures per server: sessions per second on this shared machine, and
sessions per CPU second of the server processes alone (what one process does
with a core of its own). Postfix is measured the same way (its smtpd processes,
kept alive across sessions, and tlsmgr), when it is installed and we are root.

    python bench/starttls_bench.py [--sessions N] [--concurrency C] [--clients P]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postbus.servers import free_port, wait_port
from tests.postfix_instance import PostfixInstance, available
from tests.tls_certs import Pki

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def serve(port: int, cert: str, key: str) -> None:
    """One ingress-smtpd process with a queue writer that is never called."""
    import uvloop

    from ingress_smtpd.server import SmtpServer
    from tests.integration.ingress.conftest import make_config

    async def never(entry: object, build: object) -> str:
        raise AssertionError("no mail in this bench")

    async def main() -> None:
        cfg = make_config(smtpd_tls_security_level="may", smtpd_tls_cert_file=cert,
                          smtpd_tls_key_file=key)
        server = SmtpServer(cfg, never, listener="bench")  # type: ignore[arg-type]
        await server.start("127.0.0.1", port)
        await asyncio.Event().wait()

    import logging

    logging.disable(logging.INFO)
    uvloop.run(main())


async def session(port: int, context: ssl.SSLContext) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line or line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO bench.test\r\n")
    await reply()
    writer.write(b"STARTTLS\r\n")
    if not (await reply()).startswith(b"220"):
        raise RuntimeError("STARTTLS refused")
    await writer.start_tls(context)
    writer.write(b"EHLO bench.test\r\n")
    await reply()
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


def client(port: int, count: int, concurrency: int) -> None:
    import uvloop

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    async def main() -> None:
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                queue.pop()
                await session(port, context)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    uvloop.run(main())


def load(port: int, sessions: int, concurrency: int, clients: int,
         server_pids: list[int]) -> tuple[float, float]:
    """(sessions per second, sessions per server CPU second)."""
    ctx = multiprocessing.get_context("spawn")
    per = sessions // clients
    procs = [ctx.Process(target=client, args=(port, per, concurrency // clients))
             for _ in range(clients)]
    cpu0 = cpu_seconds(server_pids)
    start = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("a client failed")
    wall = time.monotonic() - start
    cpu = cpu_seconds(server_pids) - cpu0
    return per * clients / wall, per * clients / cpu if cpu else float("inf")


def postfix_pids(instance: PostfixInstance) -> list[int]:
    master = int((instance.root / "spool/pid/master.pid").read_text().split()[0])
    kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    pids = [int(p) for p in kids.stdout.split()]
    return [p for p in pids if Path(f"/proc/{p}/comm").read_text().strip() in ("smtpd",
                                                                               "tlsmgr")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="postbus-tlsbench-"))
    try:
        run(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, args: argparse.Namespace) -> None:
    root.chmod(0o755)
    pki = Pki.create(root / "pki")
    cert, key = pki.server("server")
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=serve, args=(port, str(cert), str(key)), daemon=True)
    server.start()
    wait_port("127.0.0.1", port, 20)
    load(port, 200, args.concurrency, args.clients, [server.pid or 0])  # warm up
    rate, per_cpu = load(port, args.sessions, args.concurrency, args.clients,
                         [server.pid or 0])
    print(f"Postbus ingress-smtpd (1 process): {rate:.0f} STARTTLS sessions/s on this box, "
          f"{per_cpu:.0f} per CPU second of the process")
    server.terminate()
    if available():
        pport = free_port()
        instance = PostfixInstance(pport, {
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key), "max_use": "1000000", "max_idle": "3600s",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_new_tls_session_rate_limit": "0", "mynetworks": "127.0.0.0/8",
        })
        instance.start()
        try:
            wait_port("127.0.0.1", pport, 20)
            load(pport, 200, args.concurrency, args.clients, [])
            pids = postfix_pids(instance)
            rate, per_cpu = load(pport, args.sessions, args.concurrency, args.clients,
                                 pids)
            print(f"Postfix 3.7 smtpd ({len(pids)} processes incl. tlsmgr): "
                  f"{rate:.0f} STARTTLS sessions/s on this box, {per_cpu:.0f} per CPU second "
                  "of its smtpd and tlsmgr processes")
        finally:
            instance.stop()


if __name__ == "__main__":
    main()
