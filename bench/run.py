"""make bench: throughput and latency of Postbus end to end, and of Postfix beside it.

Load: N messages of SIZE bytes over SESSIONS concurrent SMTP sessions, one
message per session (smtp-source when installed, else our asyncio client),
into ingress -> qmgr -> delivery-smtp -> a local SMTP sink (smtp-sink when
installed, else our asyncio sink). Delivered counts and acceptance-to-
delivery times come from each system's own log (``delay=`` of every
``status=sent`` line), so both MTAs are measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postbus.servers import free_port
from tests.harness import MailSystem, replicated
from tests.postfix_instance import PostfixInstance, available

SENT = re.compile(r" status=sent ")
DELAY = re.compile(r" delay=([\d.]+),")


def start_sink(port: int, root: Path) -> subprocess.Popen[bytes]:
    if shutil.which("smtp-sink"):
        argv = ["smtp-sink", "-u", "root", "-c", f"127.0.0.1:{port}", "1000"]
    else:
        argv = [sys.executable, str(Path(__file__).with_name("sink.py")), str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    from postbus.servers import wait_port

    wait_port("127.0.0.1", port)
    return proc


def send_load(port: int, count: int, size: int, sessions: int) -> float:
    start = time.monotonic()
    if shutil.which("smtp-source"):
        subprocess.run(
            ["smtp-source", "-m", str(count), "-s", str(sessions), "-l", str(size),
             "-f", "load@bench.test", "-t", "sink@remote.test", f"127.0.0.1:{port}"],
            check=True,
        )
    else:
        from bench.source import run as source_run

        asyncio.run(source_run(port, count, size, sessions))
    return time.monotonic() - start


def wait_delivered(log: Path, count: int, timeout: float) -> tuple[float, list[float]]:
    deadline = time.monotonic() + timeout
    delays: list[float] = []
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        lines = [line for line in text.splitlines() if SENT.search(line)]
        if len(lines) >= count:
            delays = [float(m.group(1)) for line in lines if (m := DELAY.search(line))]
            return time.monotonic(), delays
        time.sleep(0.05)
    raise TimeoutError(f"only {len(lines)} of {count} delivered")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (clock ticks)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nats_counts(monitor: int) -> dict[str, int]:
    """Per stream, the messages written so far (last sequence); and the server's
    JetStream API calls and client messages in, from nats-server's monitoring."""
    import json
    import urllib.request

    base = f"http://127.0.0.1:{monitor}"
    with urllib.request.urlopen(f"{base}/jsz?streams=true", timeout=5) as reply:
        jsz = json.load(reply)
    with urllib.request.urlopen(f"{base}/varz", timeout=5) as reply:
        varz = json.load(reply)
    counts = {"api calls": int(jsz.get("api", {}).get("total", 0)),
              "client msgs in": int(varz.get("in_msgs", 0))}
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            counts[f"writes {stream['name']}"] = int(stream["state"].get("last_seq", 0))
    return counts


def print_nats_counts(before: dict[str, int], after: dict[str, int], count: int) -> None:
    for name in sorted(after):
        delta = after[name] - before.get(name, 0)
        if delta:
            print(f"  nats {name:<28} {delta / count:6.2f} per msg")


def spy(pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """Developers: with BENCH_PYSPY=<dir>, py-spy samples the busy roles during the
    load (on CPU only), collapsed stacks in <dir>/<role>.txt."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(
        [os.environ.get("PYSPY", "py-spy"), "record", "-p", str(pid), "-r", "250", "-f", "raw",
         "-o", str(Path(out) / f"{label.replace(':', '_')}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) for label, pid in pids.items() if label in ("qmgr", "smtp") or ":" in label]


def run_postbus(root: Path, args: argparse.Namespace, sink_port: int) -> dict[str, float]:
    system = MailSystem(root, {
        "relayhost": f"[127.0.0.1]:{sink_port}",
        "maillog_file": str(root / "maillog"),
        **dict(x.split("=", 1) for x in os.environ.get("BENCH_MAIN_CF", "").split(";") if x),
    }, master_cf=replicated(args.replicas, args.replicas) if args.replicas > 1 else None).start()
    try:
        pids = {label: p.pid for label, p in system.procs.items()}
        for server in (system.nats, system.redis):
            assert server.proc is not None
            pids[f"{server.name}-server"] = server.proc.pid
        monitor = system.nats.extra["monitor"]
        counts_before = nats_counts(monitor)
        spies = spy(pids)
        cpu_before = {label: cpu_seconds(pid) for label, pid in pids.items()}
        t0 = time.monotonic()
        accept_time = send_load(system.smtp_port, args.count, args.size, args.sessions)
        done, delays = wait_delivered(system.maillog, args.count, args.timeout)
        memory = {label: peak_rss_mib(pid) for label, pid in pids.items()}
        # the load's CPU only: what each process used from the first connection
        # to the last delivery (start-up left out)
        cpu = {label: cpu_seconds(pid) - cpu_before[label] for label, pid in pids.items()}
        counts_after = nats_counts(monitor)
        for proc in spies:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    finally:
        system.stop()
    result = summarize("postbus", args, accept_time, done - t0, delays)
    for label in pids:
        print(f"  {label:<18} peak memory {memory[label]:7.1f} MiB,"
              f" CPU {cpu[label] / args.count * 1000:6.3f} ms/msg")
    print(f"  total CPU of Postbus and its servers: "
          f"{sum(cpu.values()) / args.count * 1000:.3f} ms/msg")
    print_nats_counts(counts_before, counts_after, args.count)
    return result


def run_postfix(args: argparse.Namespace, sink_port: int) -> dict[str, float]:
    port = free_port()
    instance = PostfixInstance(port, {
        "relayhost": f"[127.0.0.1]:{sink_port}", "myhostname": "postfix.bench.test",
    })
    instance.start()
    try:
        from postbus.servers import wait_port

        wait_port("127.0.0.1", port)
        t0 = time.monotonic()
        accept_time = send_load(port, args.count, args.size, args.sessions)
        done, delays = wait_delivered(instance.maillog, args.count, args.timeout)
    finally:
        instance.stop()
    return summarize("postfix", args, accept_time, done - t0, delays)


def summarize(name: str, args: argparse.Namespace, accept: float, total: float,
              delays: list[float]) -> dict[str, float]:
    result = {
        "accepted": args.count / accept,
        "delivered": args.count / total,
        "p50": statistics.median(delays) if delays else 0.0,
        "p99": percentile(delays, 0.99),
    }
    print(
        f"{name}: {args.count} msgs x {args.size} B, {args.sessions} sessions: "
        f"accepted {result['accepted']:.0f} msgs/s, delivered {result['delivered']:.0f} msgs/s "
        f"end to end, acceptance->delivery p50 {result['p50']:.2f}s p99 {result['p99']:.2f}s"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--replicas", type=int, default=1,
                        help="qmgr and smtp processes of Postbus (master.cf maxproc)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postbus-bench-") as tmp:
        root = Path(tmp)
        sink_port = free_port()
        sink = start_sink(sink_port, root)
        try:
            ours = run_postbus(root / "postbus", args, sink_port)
            if not args.no_postfix and available():
                theirs = run_postfix(args, sink_port)
                print(f"ratio Postbus/Postfix end to end: "
                      f"{ours['delivered'] / theirs['delivered']:.2f}")
            else:
                print("postfix: not installed; no comparison")
        finally:
            sink.terminate()
            sink.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
