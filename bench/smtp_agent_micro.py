"""delivery-smtp's own work per message, without the bus: the agent's per-job function
(``delivery_smtp.agent``: cached session, RSET probe, MAIL/RCPT/DATA, content, log line)
delivering 5 KiB messages into Postfix's smtp-sink from C concurrent tasks, under uvloop
and Postbus logging as the service runs. Prints CPU microseconds per delivery (user +
system of this process) for each repetition.

On a shared box the CPU times still move by ~10 %; for a steady figure count
instructions instead (two runs, the difference is N2 - N1 deliveries):

    python bench/smtp_agent_micro.py [N] [C] [REPS]
    valgrind --tool=callgrind python bench/smtp_agent_micro.py 400 20 1  (and 1400 20 1)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.delivery_bench import content
from delivery_smtp.agent import agent, build
from postbus.config.loader import Config
from postbus.delivery import Stats
from postbus.logging import setup_logging
from postbus.queue.entry import DeliveryJob, Recipient
from postbus.servers import free_port, wait_port


async def run(n: int, conc: int, port: int) -> float:
    cfg = Config.from_text(
        f"relayhost = [127.0.0.1]:{port}\nsmtp_connection_cache_on_demand = yes\n",
        "smtp unix - - n - - smtp\n", service="smtp")
    deliver = agent(cfg, "smtp", build(cfg, "smtp"))
    bodies = [content(5120, i) for i in range(64)]
    counter = itertools.count()

    async def worker(count: int) -> None:
        for _ in range(count):
            i = next(counter)
            job = DeliveryJob(f"Q{i:08X}", "smtp", f"[127.0.0.1]:{port}", "load@bench.test",
                              [Recipient("sink@remote.test")], [0], 1, time.time() - 1, 5120, 1,
                              attempt_id="a1")
            got = await deliver(job, bodies[i % 64], Stats.for_job(job))
            assert got[0].status == "sent", got

    await asyncio.gather(*(worker(50) for _ in range(conc)))  # sessions opened and cached
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    done = n // conc * conc
    user = (after.ru_utime - before.ru_utime) / done * 1e6
    system = (after.ru_stime - before.ru_stime) / done * 1e6
    print(f"{done} deliveries: CPU {user + system:.1f} us/delivery "
          f"(user {user:.1f}, system {system:.1f})", flush=True)
    return user + system


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    conc = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    root = Path(tempfile.mkdtemp(prefix="postbus-smtpmicro-"))
    setup_logging("postbus/smtp", "localhost", maillog_file=str(root / "maillog"))
    port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", os.environ.get("USER", "root"),
                             f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    try:
        wait_port("127.0.0.1", port, 20)
        uvloop.install()
        got = sorted(asyncio.run(run(n, conc, port)) for _ in range(reps))
        print(f"min {got[0]:.1f} median {got[len(got) // 2]:.1f} us/delivery")
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
