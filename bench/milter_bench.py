"""Throughput with a real OpenDKIM as smtpd_milters, Postbus beside Postfix.

Load: N messages of SIZE bytes from ``load@bench.test`` over SESSIONS concurrent
SMTP sessions (smtp-source when installed, else our asyncio client) into each
system, which runs OpenDKIM (signing bench.test) as its milter and relays to a
local sink. Throughput and acceptance->delivery delays come from each system's own
log (``status=sent`` lines). The same run without the milter is given beside it, so
the milter's cost shows. A sample of what the sink got is verified with dkimpy.

    .venv/bin/python bench/milter_bench.py -n 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.run import send_load, summarize, wait_delivered
from postbus.servers import free_port, wait_port
from tests.harness import MailSystem
from tests.opendkim_instance import OpenDkim, available, opendkim
from tests.postfix_instance import PostfixInstance
from tests.postfix_instance import available as postfix_available


class Keep:
    """Keeps the first ``limit`` messages, counts the rest."""

    def __init__(self, limit: int = 50) -> None:
        self.limit = limit
        self.kept: list[bytes] = []
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.count += 1
            if len(self.kept) < self.limit:
                self.kept.append(envelope.original_content or b"")
        return "250 2.0.0 Ok: queued"


def verified(sink: Keep, odk: OpenDkim | None) -> str:
    with sink.lock:
        sample, sink.kept = sink.kept, []
    if odk is None:
        return ""
    good = sum(1 for m in sample if dkim.verify(m, dnsfunc=odk.dnsfunc))
    return f"; dkimpy verified {good}/{len(sample)} sampled signatures"


def postbus(root: Path, args: argparse.Namespace, sink: int, milter: str) -> dict[str, float]:
    main_cf = {"relayhost": f"[127.0.0.1]:{sink}", "myhostname": "postbus.bench.test"}
    if milter:
        main_cf["smtpd_milters"] = milter
    system = MailSystem(root, main_cf).start()
    try:
        wait_port("127.0.0.1", system.smtp_port)
        t0 = time.monotonic()
        accept = send_load(system.smtp_port, args.count, args.size, args.sessions)
        done, delays = wait_delivered(system.maillog, args.count, args.timeout)
    finally:
        system.stop()
    return summarize(f"postbus{' + opendkim' if milter else ''}", args, accept, done - t0,
                     delays)


def postfix(args: argparse.Namespace, sink: int, milter: str) -> dict[str, float]:
    port = free_port()
    settings = {"relayhost": f"[127.0.0.1]:{sink}", "myhostname": "postfix.bench.test"}
    if milter:
        settings["smtpd_milters"] = milter
    instance = PostfixInstance(port, settings)
    instance.start()
    try:
        wait_port("127.0.0.1", port)
        t0 = time.monotonic()
        accept = send_load(port, args.count, args.size, args.sessions)
        done, delays = wait_delivered(instance.maillog, args.count, args.timeout)
    finally:
        instance.stop()
    return summarize(f"postfix{' + opendkim' if milter else ''}", args, accept, done - t0,
                     delays)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-postfix", action="store_true")
    args = parser.parse_args()
    if not available():
        print("opendkim/opendkim-tools not installed: apt-get install opendkim opendkim-tools")
        return 1
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="postbus-milter-bench-") as tmp:
        root = Path(tmp)
        keep = Keep()
        sink = Controller(keep, hostname="127.0.0.1", port=free_port(), decode_data=False)
        sink.start()
        try:
            with opendkim(root / "dkim", "bench.test") as odk:
                for milter in ("", odk.name):
                    label = "milter" if milter else "plain"
                    results[f"postbus {label}"] = postbus(root / f"postbus-{label}", args,
                                                          sink.port, milter)
                    print(f"  sink got {keep.count}{verified(keep, odk if milter else None)}")
                    keep.count = 0
                    if not args.no_postfix and postfix_available():
                        results[f"postfix {label}"] = postfix(args, sink.port, milter)
                        print(f"  sink got {keep.count}"
                              f"{verified(keep, odk if milter else None)}")
                        keep.count = 0
        finally:
            sink.stop()
    for label in ("plain", "milter"):
        ours, theirs = results.get(f"postbus {label}"), results.get(f"postfix {label}")
        if ours and theirs:
            print(f"ratio Postbus/Postfix {label}: accepted "
                  f"{ours['accepted'] / theirs['accepted']:.2f}, end to end "
                  f"{ours['delivered'] / theirs['delivered']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
