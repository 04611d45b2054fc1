"""New mail beside a backlog of deferred mail (issue 9: "100,000 deferred: new mail's
throughput unchanged"; "100,000 deferred messages do not slow postqueue -f").

One system (ingress -> qmgr -> delivery-smtp -> smtp-sink). First M new
messages are relayed to the sink on an empty queue; then N messages go to
``defer.test``, whose transport is ``smtp:[127.0.0.1]:<a closed port>``: a dead
site, so each is deferred (a written entry and a timer, as mail for a dead
site has; most without a connection once the site is marked dead) with a
backoff of three hours: none comes due during the run; then, once the
qmgr has recorded every deferral (nothing pending on any consumer), M new
messages again, with the N deferred beside them. Figures for both loads:
delivered per second and CPU per message of every role and server (the
load only, as bench/run.py counts it). Last, how long ``postbus postqueue
-f`` takes to return with N deferred (the qmgr carries the flush out; the
command only asks), and ``postqueue -p``'s first line and whole listing.

    python bench/deferred_bench.py [-n N] [-m M] [--size B] [--sessions S]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import cpu_seconds, send_load, start_sink
from postbus.servers import free_port
from tests.harness import MailSystem

BACKOFF = "3h"  # longer than any run: no deferred message comes due meanwhile


class LogCounter:
    """Counts log lines that match, reading only what was appended since last time
    (the log of a 100,000-message backlog is too big to read again every turn)."""

    def __init__(self, path: Path, pattern: str) -> None:
        self.path = path
        self.pattern = re.compile(pattern)
        self.offset = 0
        self.count = 0
        self.rest = b""

    def update(self) -> int:
        if not self.path.exists():
            return self.count
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        self.count += sum(1 for line in lines if self.pattern.search(line.decode(errors="replace")))
        return self.count

    def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.update() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.count} of {count} lines in {self.path}")
            time.sleep(0.05)
        return time.monotonic()


def new_mail(system: MailSystem, sent: LogCounter, pids: dict[str, int],
             args: argparse.Namespace, label: str) -> None:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    target = sent.update() + args.mail
    t0 = time.monotonic()
    send_load(system.smtp_port, args.mail, args.size, args.sessions)
    done = sent.wait_for(target, args.timeout)
    cpu = {name: (cpu_seconds(pid) - before[name]) / args.mail * 1000
           for name, pid in pids.items()}
    busy = {name: ms for name, ms in cpu.items() if ms >= 0.01}
    print(f"{label}: {args.mail} new msgs x {args.size} B, {args.sessions} sessions: "
          f"delivered {args.mail / (done - t0):.0f} msgs/s, CPU {sum(cpu.values()):.3f} ms/msg "
          f"({', '.join(f'{n} {ms:.3f}' for n, ms in busy.items())})", flush=True)


def timed(system: MailSystem, *argv: str) -> tuple[float, float, int]:
    """(seconds to the first line of output, seconds to the end, lines) of a postbus
    command run as an administrator runs it."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(system.conf), *argv],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = 0.0
    lines = 0
    for _ in proc.stdout:
        lines += 1
        first = first or time.monotonic() - t0
    if proc.wait(600) != 0:
        raise RuntimeError(f"postbus {' '.join(argv)} failed")
    return first, time.monotonic() - t0, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--deferred", type=int, default=100_000)
    parser.add_argument("-m", "--mail", type=int, default=3000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postbus-deferredbench-") as tmp:
        root = Path(tmp)
        sink_port = free_port()
        sink = start_sink(sink_port, root)
        system = MailSystem(root / "postbus", {
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "transport_maps": f"texthash:{root / 'postbus' / 'etc' / 'transport'}",
            "minimal_backoff_time": BACKOFF,
            "maximal_backoff_time": BACKOFF,
        })
        dead_port = free_port()  # nothing listens there
        (system.conf / "transport").write_text(f"defer.test smtp:[127.0.0.1]:{dead_port}\n")
        system.start()
        try:
            pids = {label: p.pid for label, p in system.procs.items()}
            for server in (system.nats, system.redis):
                assert server.proc is not None
                pids[f"{server.name}-server"] = server.proc.pid
            sent = LogCounter(system.maillog, r" status=sent ")
            deferred = LogCounter(system.maillog, r"@defer\.test>.* status=deferred ")
            new_mail(system, sent, pids, args, "empty queue")
            t0 = time.monotonic()
            _send_backlog(system.smtp_port, args)
            deferred.wait_for(args.deferred, args.timeout)
            done = _wait_settled(system, args.timeout)
            print(f"backlog: {args.deferred} msgs deferred in {done - t0:.0f} s "
                  f"({args.deferred / (done - t0):.0f} msgs/s)", flush=True)
            new_mail(system, sent, pids, args, f"{args.deferred} deferred")
            first, whole, lines = timed(system, "postqueue", "-p")
            print(f"postqueue -p with {args.deferred} deferred: first line {first:.2f} s, "
                  f"whole {whole:.1f} s, {lines} lines")
            _, flush, _ = timed(system, "postqueue", "-f")
            print(f"postqueue -f with {args.deferred} deferred: returned in {flush:.2f} s")
        finally:
            system.stop()
            sink.terminate()
            sink.wait()
    return 0


def _wait_settled(system: MailSystem, timeout: float) -> float:
    """Wait until the qmgr has recorded every deferral: the agents log
    ``status=deferred`` before the qmgr writes the entry and the timer, and
    thousands of results may still wait for it then (measured beside the new
    mail, they were most of what the backlog seemed to cost). Settled: no
    consumer of the queue or of the work in flight has anything pending or
    unacknowledged."""
    url = f"http://127.0.0.1:{system.nats.extra['monitor']}/jsz?consumers=true&accounts=true"
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url) as reply:
            jsz = json.load(reply)
        busy = [consumer["num_pending"] + consumer["num_ack_pending"]
                for account in jsz.get("account_details", [])
                for stream in account.get("stream_detail", [])
                for consumer in stream.get("consumer_detail") or []]
        if not any(busy):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the queue did not settle: {sum(busy)} messages in hand")
        time.sleep(0.2)


def _send_backlog(port: int, args: argparse.Namespace) -> None:
    subprocess.run(
        ["smtp-source", "-m", str(args.deferred), "-s", str(args.sessions), "-l", "1024",
         "-f", "load@bench.test", "-t", "backlog@defer.test", f"127.0.0.1:{port}"],
        check=True,
    )


if __name__ == "__main__":
    sys.exit(main())
