"""Running a stream reader over fixed bytes, for the protocol fuzzers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def read_all(data: bytes, read: Callable[[asyncio.StreamReader], Awaitable[T]],
             limit: int = 2**16) -> list[T | BaseException]:
    """Call ``read`` on a reader holding ``data`` then EOF, until it returns None or raises.

    The results, with the exception that ended them last (None is not kept).
    """

    async def run() -> list[T | BaseException]:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(data)
        reader.feed_eof()
        out: list[T | BaseException] = []
        while True:
            try:
                async with asyncio.timeout(10):  # all the data is there: no wait is legitimate
                    result = await read(reader)
            except Exception as exc:
                out.append(exc)
                return out
            if result is None:
                return out
            out.append(result)

    return asyncio.run(run())
