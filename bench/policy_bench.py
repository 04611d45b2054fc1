"""Policy service benchmark: requests per second of one policy process with greylisting
on (issue 12: target >= 5,000 per process over reused connections, Redis round trips
included), and what ingress-smtpd's policy client (check_policy_service) costs per request
(target: <= 0.1 ms CPU per message with a local policy server).

Starts its own redis-server and one policy process on loopback (postbus_policy_checks =
greylist, Postfix-sized requests of about 30 attributes, each a new triplet, so every
request is one Redis script), then drives it from ``--connections`` reused connections,
each sending its next request when the answer to the last one arrived, as Postfix's
smtpd does. Prints requests/s and the server's CPU seconds per request. Then smtpd's own
client (``ingress_smtpd.restrictions.policy_client.PolicyClient``, reused connections) asks
the same server from this process, and the CPU this process spent per request is printed:
the client's cost in an smtpd, less building the attribute list.

Run: ``python bench/policy_bench.py`` (``--seconds``, ``--connections``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from postbus.servers import free_port, redis_server

ATTRS = (
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    "helo_name=mx.client.example\nqueue_id=\nsender=news-{n}@lists.example.org\n"
    "recipient=user{n}@postbus.test\nrecipient_count=0\nclient_address=192.0.2.{m}\n"
    "client_name=mx.client.example\nreverse_client_name=mx.client.example\ninstance={n}.1\n"
    "sasl_method=\nsasl_username=\nsasl_sender=\nsize=0\nccert_subject=\nccert_issuer=\n"
    "ccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\n"
    "encryption_cipher=\nencryption_keysize=0\netrn_domain=\nstress=\n"
    "server_address=127.0.0.1\nserver_port=25\ncompatibility_level=3.6\nmail_version=3.7.11\n"
    "policy_context=\n\n"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, connections: int, seconds: float) -> int:
    done = 0
    stop = time.monotonic() + seconds

    async def one(c: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = c * 10_000_000
        while time.monotonic() < stop:
            n += 1
            writer.write(ATTRS.format(n=n, m=n % 250).encode())
            reply = await reader.readuntil(b"\n\n")
            assert reply.startswith(b"action=DEFER_IF_PERMIT 4.2.0 Greylisted"), reply
            done += 1
        writer.close()

    await asyncio.gather(*(one(c) for c in range(connections)))
    return done


def client_cpu(port: int, requests: int) -> float:
    """CPU seconds of this process per request sent with smtpd's policy client."""
    from ingress_smtpd.restrictions.policy_client import PolicyClient
    from postbus.config.loader import Config

    client = PolicyClient(f"inet:127.0.0.1:{port}", Config.from_text(""),
                          "smtpd_recipient_restrictions")
    request = dict(line.split("=", 1) for line in ATTRS.strip().split("\n"))

    async def run() -> float:
        async def session(s: int) -> None:
            for n in range(requests // 10):
                attrs = request | {"recipient": f"c{s}-{n}@postbus.test",
                                   "instance": f"c{s}.{n}"}
                action = await client.query(attrs)
                assert action is not None and action.startswith("DEFER_IF_PERMIT"), action
        await session(0)  # warm up: the connection
        start = time.process_time()
        await asyncio.gather(*(session(s) for s in range(1, 11)))
        used = time.process_time() - start
        await client.close()
        return used / (requests // 10 * 10)

    import uvloop  # as smtpd runs

    return uvloop.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        redis = redis_server(work / "redis").start()
        conf = work / "etc"
        conf.mkdir()
        port, metrics = free_port(), free_port()
        (conf / "main.cf").write_text(
            f"data_directory = {work}\npostbus_redis_url = {redis.url}/0\n"
            "postbus_policy_checks = greylist\nmaillog_file = /dev/null\n")
        (conf / "master.cf").write_text(f"127.0.0.1:{port} inet n - n - - policy\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "policy", "-c", str(conf), "-n", f"127.0.0.1:{port}",
             "--metrics", f"127.0.0.1:{metrics}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=os.environ | {"POSTBUS_PROFILE_DIR": os.environ.get("BENCH_PROFILE", "")})
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{metrics}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "policy did not start"
                time.sleep(0.05)
            asyncio.run(drive(port, args.connections, 1.0))  # warm up
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            done = asyncio.run(drive(port, args.connections, args.seconds))
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
            print(f"policy service, greylisting on, {args.connections} reused connections: "
                  f"{done / elapsed:,.0f} requests/s per process "
                  f"({cpu / done * 1e6:.0f} us server CPU per request, "
                  f"{done / cpu:,.0f} requests per server CPU second)")
            per = client_cpu(port, 5000)
            print(f"smtpd policy client (check_policy_service, reused connections): "
                  f"{per * 1000:.3f} ms CPU per request")
        finally:
            proc.terminate()
            proc.wait(10)
            redis.stop()


if __name__ == "__main__":
    main()
