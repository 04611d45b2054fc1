"""DKIM signing rate of the content-filter's Signer (dkimpy, RSA), one core.

    .venv/bin/python -m bench.dkim_sign [--bits 2048] [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from content_filter.dkim_sign import Signer
from postbus.cli.dkim import keygen
from postbus.config.loader import Config

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: bench\r\n"
           b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\nMessage-ID: <b@example.test>\r\n\r\n"
           + b"x" * 76 + b"\r\n") * 1 + b"line of body text\r\n" * 100


async def run(bits: int, count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        key, _ = keygen("example.test", "bench", bits, Path(tmp))
        (Path(tmp) / "signing").write_text(f"example.test example.test:bench:{key}\n")
        signer = Signer(Config.from_text(f"postbus_dkim_signing_table = texthash:{tmp}/signing\n"))
        await signer.sign(MESSAGE, "")
        start = time.perf_counter()
        for _ in range(count):
            await signer.sign(MESSAGE, "")
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    rate = asyncio.run(run(args.bits, args.n))
    print(f"{args.bits}-bit RSA, {len(MESSAGE)} bytes: {rate:.0f} signatures/s")


if __name__ == "__main__":
    main()
