"""Acceptance rate and CPU per message of ingress-smtpd alone, and of Postfix's smtpd.

Load: N messages of SIZE bytes over SESSIONS concurrent SMTP sessions, one
message per connection (smtp-source when installed, else bench/source.py),
into one ingress-smtpd that writes each message to JetStream (fsync) before
its 250. A qmgr runs beside it with default_transport = discard, so the queue
is emptied as in production and the stream does not only grow; only the
ingress process's CPU is counted (utime + stime from /proc/<pid>/stat).

Postfix runs the same load with default_transport = discard; its figure is
the CPU of its smtpd and cleanup processes (kept alive across sessions with
max_use and max_idle), trivial-rewrite shown apart (Postbus rewrites in qmgr).

    python bench/ingress_bench.py [-n N] [--size B] [--sessions S] [--no-postfix]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import send_load
from postbus.servers import free_port, wait_port
from tests.harness import MASTER_CF, MailSystem
from tests.postfix_instance import PostfixInstance, available

TICKS = os.sysconf("SC_CLK_TCK")
#: Only the SMTP listener and the queue manager: no delivery agents are needed for discard:.
INGRESS_MASTER_CF = "\n".join(MASTER_CF.splitlines()[:2]) + "\n"


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0, 0.0
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def run_postbus(root: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(messages accepted per second, ingress CPU ms per message)."""
    system = MailSystem(root, {
        "default_transport": "discard",
        **dict(x.split("=", 1) for x in os.environ.get("BENCH_MAIN_CF", "").split(";") if x),
    }, master_cf=INGRESS_MASTER_CF).start()
    try:
        smtpd = next(p for label, p in system.procs.items() if label != "qmgr")
        send_load(system.smtp_port, min(500, args.count), args.size, args.sessions)  # warm up
        assert system.nats.proc is not None
        nats_pid = system.nats.proc.pid
        (user0, sys0), nats0 = cpu_split(smtpd.pid), cpu_seconds(nats_pid)
        wall = send_load(system.smtp_port, args.count, args.size, args.sessions)
        user, sys_ = (b - a for a, b in zip((user0, sys0), cpu_split(smtpd.pid), strict=True))
        cpu = user + sys_
        nats_cpu = cpu_seconds(nats_pid) - nats0
        qmgr_cpu = cpu_seconds(system.procs["qmgr"].pid)
    finally:
        system.stop()
    rate, per = args.count / wall, cpu / args.count * 1000
    print(f"postbus ingress-smtpd: {args.count} msgs x {args.size} B, {args.sessions} sessions, "
          f"1 msg/connection: {rate:.0f} msgs/s accepted, {per:.3f} ms CPU/msg in ingress "
          f"({user / args.count * 1000:.3f} user + {sys_ / args.count * 1000:.3f} system) "
          f"(nats-server {nats_cpu / args.count * 1000:.3f} ms/msg; qmgr beside it: "
          f"{qmgr_cpu / (args.count + min(500, args.count)) * 1000:.3f} ms/msg)")
    return rate, per


def postfix_cpu(instance: PostfixInstance) -> dict[int, tuple[str, float]]:
    master = int((instance.root / "spool/pid/master.pid").read_text().split()[0])
    kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    out = {}
    for pid in map(int, kids.stdout.split()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            continue
        out[pid] = (comm, cpu_seconds(pid))
    return out


def run_postfix(args: argparse.Namespace) -> tuple[float, float]:
    port = free_port()
    instance = PostfixInstance(port, {
        "default_transport": "discard", "myhostname": "postfix.bench.test",
        "max_use": "1000000", "max_idle": "3600s",
        "smtpd_client_connection_count_limit": "0", "smtpd_client_connection_rate_limit": "0",
        "smtpd_client_message_rate_limit": "0",
    })
    instance.start()
    try:
        wait_port("127.0.0.1", port, 20)
        send_load(port, min(500, args.count), args.size, args.sessions)  # spawn the processes
        before = postfix_cpu(instance)
        wall = send_load(port, args.count, args.size, args.sessions)
        after = postfix_cpu(instance)
    finally:
        instance.stop()
    used: dict[str, float] = {}
    for pid, (comm, cpu) in after.items():
        used[comm] = used.get(comm, 0.0) + cpu - before.get(pid, (comm, 0.0))[1]
    rate = args.count / wall
    per = (used.get("smtpd", 0.0) + used.get("cleanup", 0.0)) / args.count * 1000
    rewrite = used.get("trivial-rewrite", 0.0) / args.count * 1000
    print(f"postfix 3.7 smtpd+cleanup: {args.count} msgs x {args.size} B, {args.sessions} "
          f"sessions: {rate:.0f} msgs/s accepted, {per:.3f} ms CPU/msg in smtpd+cleanup "
          f"(trivial-rewrite {rewrite:.3f} ms/msg)")
    return rate, per


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--no-postfix", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="postbus-ingressbench-") as tmp:
        ours = run_postbus(Path(tmp) / "postbus", args)
    if not args.no_postfix and available():
        theirs = run_postfix(args)
        print(f"ratio Postbus/Postfix: rate {ours[0] / theirs[0]:.2f}, "
              f"CPU per message {ours[1] / theirs[1]:.2f}")
    elif not args.no_postfix:
        print("postfix: not installed (or not root); no comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
