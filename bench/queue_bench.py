"""Queue administration at scale: postqueue -p / -j, the gauges, postsuper ALL
(issue 9, point 5; figures in BENCHMARKS.md).

Starts its own nats-server and queues N messages (default 100,000) by
publishing their queue files directly, as ingress would write them: a
fraction ``--written`` of them also get a written entry (deferred, with a
reason), as a backlog of deferred mail has. The nats-server does not fsync
each write here: only filling the queue would be slower, every figure
measured is a read (or postsuper's writes, noted). Then it runs the real
commands as subprocesses and prints, one line each:

* ``postqueue -p``: seconds to its first line and to its last, lines, and
  whether every queue ID was listed;
* ``postqueue -j``: the same;
* one refresh of the queue gauges (what each qmgr replica does every
  postbus_queue_scan_interval) and one recount (what one replica does hourly);
* with ``--postsuper``: ``postsuper -h ALL`` and ``postsuper -d ALL``.

Run: ``python bench/queue_bench.py`` (``-n 1000000`` for a million).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.aio.client import Client as NATS

from postbus.bus import subjects as s
from postbus.bus.jetstream import connect, ensure_streams
from postbus.queue import gauges
from postbus.queue.entry import QueueEntry, Recipient
from postbus.servers import ServerProcess, nats_server
from tests.integration.queue_fill import BATCH, fill, nats_without_fsync

LISTED = re.compile(r"^([0-9A-Z]{11})[*!]? ", re.M)


async def bus(url: str) -> NATS:
    return await connect(url, "bench", closing=lambda: True)  # no warning when we close


async def write_deferred(url: str, ids: list[str]) -> None:
    """Give these messages a written entry: deferred, one attempt, a reason."""
    nc = await bus(url)
    template = QueueEntry("QUEUEID", "a@client.test", [Recipient(
        "x@remote.test", state="deferred", dsn="4.4.1", reason="connect to mx.remote.test"
        "[192.0.2.1]:25: Connection timed out", transport="smtp:remote.test")],
        size=25, queue="deferred", attempts=1, next_attempt=time.time() + 3600)
    raw = template.encode().decode()
    for start in range(0, len(ids), BATCH):
        batch = ids[start:start + BATCH]
        for qid in batch[:-1]:
            await nc.publish(s.entry_subject(qid, s.LONG_BUCKET),
                             raw.replace("QUEUEID", qid, 1).encode())
        last = batch[-1]
        await nc.jetstream().publish(s.entry_subject(last, s.LONG_BUCKET),
                                     raw.replace("QUEUEID", last, 1).encode(),
                                     stream=s.QUEUE_STREAM)
    await gauges.recount(nc.jetstream())
    await nc.close()


async def queue(url: str, count: int, written: float) -> list[str]:
    nc = await bus(url)
    await ensure_streams(nc.jetstream())
    ids = await fill(nc, count)
    await nc.close()
    await write_deferred(url, ids[: int(count * written)])
    return ids


def listing(conf: Path, flag: str, ids: list[str]) -> str:
    start = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), "postqueue", flag],
        stdout=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        first_after = time.monotonic() - start
        rest = proc.stdout.read()
        proc.wait()
    total = time.monotonic() - start
    text = first + rest
    found = (set(LISTED.findall(text)) if flag == "-p"
             else set(re.findall(r'"queue_id": "(\w+)"', text)))
    complete = "complete" if found == set(ids) else f"INCOMPLETE ({len(found)})"
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return (f"postqueue {flag}: first line {first_after:.2f} s, all {total:.2f} s, "
            f"{text.count(chr(10))} lines, {complete} (peak memory of the tools so far "
            f"{peak:.0f} MiB)")


async def gauge_figures(url: str) -> str:
    nc = await bus(url)
    js = nc.jetstream()
    start = time.monotonic()
    sizes, _ = await gauges.counts(nc, js)
    refresh = time.monotonic() - start
    start = time.monotonic()
    await gauges.recount(js)
    recount = time.monotonic() - start
    await nc.close()
    return (f"gauges: refresh {refresh * 1000:.1f} ms (deferred {sizes['deferred']}), "
            f"hourly recount {recount:.2f} s")


def postsuper(conf: Path, *args: str) -> str:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), "postsuper", *args],
        capture_output=True, text=True, check=True,
    )
    return f"postsuper {' '.join(args)}: {time.monotonic() - start:.1f} s " \
           f"({done.stderr.strip().splitlines()[-1]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=100_000)
    parser.add_argument("--written", type=float, default=0.5,
                        help="fraction of messages with a written (deferred) entry")
    parser.add_argument("--postsuper", action="store_true",
                        help="also time postsuper -h ALL and -d ALL (writes every message)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postbus-queue-bench-") as tmp:
        root = Path(tmp)
        server: ServerProcess = nats_without_fsync(nats_server(root / "nats")).start()
        try:
            conf = root / "etc"
            conf.mkdir()
            (conf / "main.cf").write_text(
                f"postbus_nats_url = {server.url}\nmaillog_file = {root / 'maillog'}\n")
            (conf / "master.cf").write_text("")
            start = time.monotonic()
            ids = asyncio.run(queue(server.url, args.count, args.written))
            print(f"queued {len(ids)} messages ({args.written:.0%} with a written deferred "
                  f"entry) in {time.monotonic() - start:.1f} s")
            print(listing(conf, "-p", ids))
            print(listing(conf, "-j", ids))
            print(asyncio.run(gauge_figures(server.url)))
            if args.postsuper:
                print(postsuper(conf, "-h", "ALL"))
                print(postsuper(conf, "-d", "ALL"))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
