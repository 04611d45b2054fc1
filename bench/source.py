"""A minimal SMTP load generator (used when Postfix's smtp-source is not installed)."""

from __future__ import annotations

import asyncio


async def one(port: int, body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    for command in (b"EHLO source\r\n", b"MAIL FROM:<load@bench.test>\r\n",
                    b"RCPT TO:<sink@remote.test>\r\n", b"DATA\r\n"):
        writer.write(command)
        while (await reader.readline())[3:4] == b"-":
            pass
    writer.write(body + b".\r\nQUIT\r\n")
    await reader.readline()
    await reader.readline()
    writer.close()


async def run(port: int, count: int, size: int, sessions: int) -> None:
    line = b"x" * 78 + b"\r\n"
    body = b"Subject: bench\r\n\r\n" + line * max(1, size // len(line))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await one(port, body)

    await asyncio.gather(*(worker() for _ in range(sessions)))
