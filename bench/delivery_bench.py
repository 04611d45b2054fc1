"""Delivery agents alone: delivery-smtp into smtp-sink and delivery-local (virtual) into
Maildir, from a full queue, and Postfix's smtp(8) and virtual(8) beside them (issue 14).

N messages of 5 KiB are queued while no delivery agent runs (Postbus: through
the queue API, as ingress queues; Postfix: through its smtpd with every
message put on hold). Then the agents start (Postbus: one qmgr and one
delivery agent process; Postfix: ``postsuper -H ALL`` and ``postqueue -f``)
and the clock runs until Postfix's ``smtp-sink`` has counted N messages, or
N files are in the Maildirs' ``new/``. Two figures per case:

* msgs/s from the start to the Nth delivery, and from the first delivery to
  the Nth (the steady rate, without the processes' start);
* CPU ms per delivery of each process, counted from the first delivery to the
  Nth (so a Python process's imports are not in it).

delivery-smtp runs with ``smtp_connection_cache_on_demand`` on and off (the
cache's gain); the sink's session count shows how many connections it took.
Maildir delivery keeps its fsync (Postbus and Postfix alike).

    python bench/delivery_bench.py [-n N] [--only smtp|virtual] [--no-postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postbus.bus.jetstream import connect, ensure_streams
from postbus.bus.subjects import WORK_STREAM
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.file import QueueFile
from postbus.servers import free_port, wait_port
from tests.harness import MAIL_OWNER, MailSystem
from tests.postfix_instance import PostfixInstance, available

TICKS = os.sysconf("SC_CLK_TCK")
USERS = [f"user{i}" for i in range(4)]
VIRTUAL_DOMAIN = "virt.test"
COUNTER = re.compile(rb"sess=(\d+) quit=\d+ mesg=(\d+)")


def content(size: int, index: int) -> bytes:
    head = (f"From: load@bench.test\r\nTo: sink@remote.test\r\nSubject: bench {index}\r\n"
            f"Message-Id: <{index}.bench@bench.test>\r\n\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body


def cpu_of(pid: int) -> float:
    """utime + stime of a live process in seconds (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class Sink:
    """smtp-sink on a loopback port, its running counter read from its stdout."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.messages = 0
        self.sessions = 0
        self.proc = subprocess.Popen(
            ["smtp-sink", "-c", "-u", "root", f"127.0.0.1:{self.port}", "1000"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=root)
        threading.Thread(target=self._read, daemon=True).start()
        wait_port("127.0.0.1", self.port, 20)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        tail = b""
        while chunk := os.read(fd, 65536):
            tail = (tail + chunk)[-200:]
            found = COUNTER.findall(tail)
            if found:
                self.sessions, self.messages = int(found[-1][0]), int(found[-1][1])

    def count(self) -> int:
        return self.messages

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def maildir_count(base: Path) -> Callable[[], int]:
    def count() -> int:
        total = 0
        for user in USERS:
            with contextlib.suppress(FileNotFoundError):
                total += len(os.listdir(base / user / "new"))
        return total
    return count


def clock(count: Callable[[], int], n: int, pids: Callable[[], dict[str, int]],
          start: float, timeout: float) -> dict[str, float]:
    """Wait for ``n`` deliveries; rates and CPU seconds per process from the first on."""
    deadline = start + timeout
    first = 0.0
    base: dict[int, float] = {}
    done_at_first = 0
    last: dict[int, float] = {}
    names: dict[int, str] = {}
    while (got := count()) < n:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"only {got} of {n} delivered")
        current = pids()
        for name, pid in current.items():
            names[pid] = name
            last[pid] = max(last.get(pid, 0.0), cpu_of(pid))
        if got and not first:
            first, done_at_first = now, got
            base = {pid: cpu_of(pid) for pid in current.values()}
        time.sleep(0.02)
    end = time.monotonic()
    for name, pid in pids().items():
        names[pid] = name
        last[pid] = max(last.get(pid, 0.0), cpu_of(pid))
    cpu: dict[str, float] = {}
    for pid, value in last.items():
        cpu[names[pid]] = cpu.get(names[pid], 0.0) + value - base.get(pid, 0.0)
    counted = n - done_at_first
    return {"rate": n / (end - start), "steady": counted / (end - first) if end > first else 0,
            "counted": counted, **{f"cpu:{k}": v for k, v in cpu.items()}}


def report(name: str, n: int, result: dict[str, float], extra: str = "") -> None:
    per = {k[4:]: v / result["counted"] * 1000 for k, v in result.items() if k[:4] == "cpu:"}
    if "work" in result:
        extra += f", {result['work'] / n:.1f} work-stream writes per delivery"
    cpus = ", ".join(f"{k} {v:.3f}" for k, v in sorted(per.items(), key=lambda x: -x[1]))
    print(f"{name}: {n} msgs, {result['rate']:.0f} msgs/s from start, "
          f"{result['steady']:.0f} msgs/s steady{extra}; CPU ms/delivery: {cpus}", flush=True)


# -- Postbus ------------------------------------------------------------------------------

async def enqueue(url: str, n: int, size: int, rcpt: Callable[[int], str]) -> None:
    nc = await connect(url, "bench", closing=lambda: True)
    js = nc.jetstream()
    await ensure_streams(js)
    queue = QueueFile(nc, js)
    for start in range(0, n, 200):
        await asyncio.gather(*(
            queue.enqueue(QueueEntry("", "load@bench.test", [Recipient(rcpt(i))],
                                     size=size, client_name="localhost",
                                     client_addr="127.0.0.1", helo="bench.test"),
                          content(size, i))
            for i in range(start, min(n, start + 200))))
    await nc.close()


async def work_writes(url: str) -> float:
    """Messages written to the work stream so far (jobs, parked jobs, results...)."""
    nc = await connect(url, "bench", closing=lambda: True)
    try:
        info = await nc.jetstream().stream_info(WORK_STREAM)
        return float(info.state.last_seq)
    finally:
        await nc.close()


def postbus_run(args: argparse.Namespace, agent: str, settings: dict[str, str],
                rcpt: Callable[[int], str], count: Callable[[], int]) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="postbus-delivbench-"))
    system = MailSystem(root, {"maillog_file": str(root / "maillog"), **settings,
                               **dict(x.split("=", 1) for x in args.main_cf if x)})
    try:
        system.start(only=[])
        asyncio.run(enqueue(system.nats.url, args.count, args.size, rcpt))
        start = time.monotonic()
        for label in ("qmgr", agent):
            if args.profile:
                start_profiled(system, label, args.profile)
            else:
                system.start_role(label)

        def pids() -> dict[str, int]:
            assert system.nats.proc is not None and system.redis.proc is not None
            return {"qmgr": system.procs["qmgr"].pid, agent: system.procs[agent].pid,
                    "nats-server": system.nats.proc.pid, "redis-server": system.redis.proc.pid}

        result = clock(count, args.count, pids, start, args.timeout)
        result["work"] = asyncio.run(work_writes(system.nats.url))
        if args.counters:
            for label in ("qmgr", agent):
                port = system.children[label].metrics_port
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
                    text = reply.read().decode()
                for line in text.splitlines():
                    if line.startswith(("postbus_bus_", "postbus_delivery_attempts")):
                        print(f"  {label}: {line}")
        return result
    finally:
        system.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_profiled(system: MailSystem, label: str, directory: str) -> None:
    """A role under bench/cpu_profile.py: its profile lands in ``directory`` at exit."""
    argv = system.children[label].argv(system.conf)
    wrapper = [argv[0], str(Path(__file__).with_name("cpu_profile.py")), *argv[2:]]
    log = open(system.root / f"{label}.out", "ab")  # noqa: SIM115
    system.procs[label] = subprocess.Popen(
        wrapper, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "POSTBUS_PROFILE_DIR": directory})
    log.close()


def virtual_settings(base: Path) -> dict[str, str]:
    """Four virtual Maildir users under ``base``, owned by mail_owner as root (else by us)."""
    if os.geteuid() == 0:
        owner = pwd.getpwnam(MAIL_OWNER)
        uid, gid = owner.pw_uid, owner.pw_gid
    else:
        uid, gid = os.geteuid(), os.getegid()
    maps = ", ".join(f"{u}@{VIRTUAL_DOMAIN}={u}/" for u in USERS)
    return {"virtual_mailbox_domains": VIRTUAL_DOMAIN, "virtual_mailbox_base": str(base),
            "virtual_mailbox_maps": f"inline:{{{maps}}}", "virtual_minimum_uid": "1",
            "virtual_uid_maps": f"static:{uid}", "virtual_gid_maps": f"static:{gid}"}


#: Mailboxes written so far, removed when the bench ends: a removal of thousands
#: of files slows the next run's file creation on this box's ext4 (its
#: ``recently_deleted`` scan), whichever MTA runs next.
_written: list[Path] = []


def remove_mailboxes() -> None:
    for base in _written:
        shutil.rmtree(base, ignore_errors=True)
    _written.clear()


def mailbox_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="postbus-delivbench-mail-"))
    _written.append(base)
    base.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(base, MAIL_OWNER, MAIL_OWNER)
    return base


def run_smtp(args: argparse.Namespace, cache: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="postbus-delivbench-sink-"))
    sink = Sink(root)
    try:
        result = postbus_run(args, "smtp", {
            "relayhost": f"[127.0.0.1]:{sink.port}",
            "smtp_connection_cache_on_demand": "yes" if cache else "no"},
            lambda i: "sink@remote.test", sink.count)
        report(f"Postbus delivery-smtp, cache {'on' if cache else 'off'}", args.count, result,
               f", {sink.sessions} SMTP sessions")
    finally:
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)


def run_virtual(args: argparse.Namespace) -> None:
    base = mailbox_base()
    result = postbus_run(args, "virtual", virtual_settings(base),
                         lambda i: f"{USERS[i % len(USERS)]}@{VIRTUAL_DOMAIN}",
                         maildir_count(base))
    report("Postbus delivery-local (virtual, Maildir, fsync)", args.count, result)


# -- Postfix ------------------------------------------------------------------------------

def postfix_processes(instance: PostfixInstance) -> Callable[[], dict[str, int]]:
    pidfile = instance.root / "spool/pid/master.pid"

    def pids() -> dict[str, int]:
        master = int(pidfile.read_text().split()[0])
        kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
        found = {}
        for pid in map(int, kids.stdout.split()):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            found[f"{comm}[{pid}]"] = pid
        return found
    return pids


def postfix_run(args: argparse.Namespace, settings: dict[str, str], rcpts: list[str],
                count: Callable[[], int]) -> dict[str, float]:
    port = free_port()
    instance = PostfixInstance(port, {
        "myhostname": "postfix.bench.test", "max_use": "1000000",
        "smtpd_client_restrictions": "check_client_access static:HOLD", **settings})
    instance.start()
    try:
        wait_port("127.0.0.1", port, 20)
        for i, rcpt in enumerate(rcpts):  # the messages spread over the recipients
            share = args.count // len(rcpts) + (i < args.count % len(rcpts))
            subprocess.run(["smtp-source", "-m", str(share), "-s", "10", "-l", str(args.size),
                            "-f", "load@bench.test", "-t", rcpt, f"127.0.0.1:{port}"],
                           check=True)
        hold = instance.root / "spool/hold"
        deadline = time.monotonic() + args.timeout
        while len(os.listdir(hold)) < args.count:
            if time.monotonic() > deadline:
                raise TimeoutError("Postfix did not hold every message")
            time.sleep(0.05)
        start = time.monotonic()
        subprocess.run(["postsuper", "-c", str(instance.etc), "-H", "ALL"], check=True,
                       capture_output=True)
        subprocess.run(["postqueue", "-c", str(instance.etc), "-f"], check=True)
        raw = clock(count, args.count, postfix_processes(instance), start, args.timeout)
    finally:
        instance.stop()
    grouped: dict[str, float] = {}
    for key, value in raw.items():
        name = key.split("[")[0]
        grouped[name] = grouped.get(name, 0.0) + value
    return grouped


def run_postfix_smtp(args: argparse.Namespace, cache: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="postbus-delivbench-sink-"))
    sink = Sink(root)
    try:
        result = postfix_run(args, {"relayhost": f"[127.0.0.1]:{sink.port}",
                                    "smtp_connection_cache_on_demand":
                                        "yes" if cache else "no"},
                             ["sink@remote.test"], sink.count)
        report(f"Postfix 3.7 smtp(8), cache {'on' if cache else 'off'}", args.count, result,
               f", {sink.sessions} SMTP sessions")
    finally:
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)


def run_postfix_virtual(args: argparse.Namespace) -> None:
    base = mailbox_base()
    settings = virtual_settings(base)
    maps = " ".join(f"{u}@{VIRTUAL_DOMAIN}={u}/" for u in USERS)
    settings["virtual_mailbox_maps"] = f"inline:{{{maps}}}"
    # one recipient per message, over the same four users, as for Postbus
    result = postfix_run(args, settings, [f"{u}@{VIRTUAL_DOMAIN}" for u in USERS],
                         maildir_count(base))
    report("Postfix 3.7 virtual(8) (Maildir)", args.count, result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--only", choices=["smtp", "smtp-cache", "virtual"])
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--profile", metavar="DIR",
                        help="profile qmgr and the agent (CPU time) into DIR")
    parser.add_argument("--counters", action="store_true",
                        help="print the bus and delivery counters of qmgr and the agent")
    parser.add_argument("--main-cf", action="append", default=[],
                        help="name=value for Postbus's main.cf (repeatable)")
    args = parser.parse_args()
    if not shutil.which("smtp-sink"):
        print("delivery bench: smtp-sink (Debian's postfix package) is not installed; skipped")
        return 0
    postfix = not args.no_postfix and available() and shutil.which("smtp-source") is not None
    if args.only in (None, "smtp", "smtp-cache"):
        run_smtp(args, cache=True)
        if args.only is None or args.only == "smtp":
            run_smtp(args, cache=False)
        if postfix:
            run_postfix_smtp(args, cache=True)
            if args.only is None or args.only == "smtp":
                run_postfix_smtp(args, cache=False)
    if args.only in (None, "virtual"):
        try:
            run_virtual(args)
            if postfix:
                run_postfix_virtual(args)
        finally:
            remove_mailboxes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
