"""Requests and JetStream writes on one connection, answered through one subscription.

nats.py's ``request()``, and so ``js.publish()``, draws random bytes for a
token and waits through ``wait_for`` (an extra future and loop turn) on
every call: about a third of a request's client CPU. The queue file writes
or purges once or twice per message, so it asks through :class:`Requests`:
a counter names each request, a timer bounds its wait. Errors are those of
nats.py's calls (``nats.errors.TimeoutError``, ``NoRespondersError``; for a
write, ``APIError`` with JetStream's code and ``NoStreamResponseError``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream: expected last subject sequence differs
PUBLISH_TIMEOUT = 5.0  # seconds to wait for JetStream's acknowledgement (nats.py's default)


@dataclass
class Stored:
    """JetStream's acknowledgement of a write."""

    seq: int
    duplicate: bool = False


class Requests:
    """Requests of one process on one connection (see the module docstring)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = ""
        self.sub: Subscription | None = None
        self.waiting: dict[str, asyncio.Future[Msg]] = {}
        self.seq = 0
        self.opening: asyncio.Lock | None = None

    async def request(
        self, subject: str, data: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Msg:
        """The answer; nats' TimeoutError or NoRespondersError as ``nc.request``."""
        if self.sub is None:
            await self._open()
        self.seq += 1
        token = str(self.seq)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self.waiting[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self.nc.publish(subject, data, reply=self.prefix + token, headers=headers)
            msg = await future
        finally:
            timer.cancel()
            self.waiting.pop(token, None)
        if msg.headers and not msg.data and msg.headers.get("Status") == "503":
            raise NoRespondersError
        return msg

    async def _open(self) -> None:
        if self.opening is None:
            self.opening = asyncio.Lock()
        async with self.opening:
            if self.sub is None:
                prefix = self.nc.new_inbox() + "."
                self.sub = await self.nc.subscribe(prefix + "*", cb=self._answered)
                self.prefix = prefix

    async def _answered(self, msg: Msg) -> None:
        future = self.waiting.pop(msg.subject[len(self.prefix):], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def js_publish(
        self, subject: str, data: bytes, stream: str, headers: dict[str, str] | None = None
    ) -> Stored:
        """``js.publish(subject, data, stream=stream, headers=headers)``, the same
        errors (APIError with JetStream's code, NoStreamResponseError)."""
        try:
            msg = await self.request(subject, data, PUBLISH_TIMEOUT,
                                     {**(headers or {}), "Nats-Expected-Stream": stream})
        except NoRespondersError:
            raise NoStreamResponseError from None
        answer = orjson.loads(msg.data)
        if "error" in answer:
            raise APIError.from_error(answer["error"])
        return Stored(int(answer["seq"]), bool(answer.get("duplicate", False)))


    async def last_by_subject(self, stream: str, subject: str,
                              timeout: float = PUBLISH_TIMEOUT) -> Msg:
        """The last message of ``subject`` by direct get (``js.get_last_msg(...,
        direct=True)``): NotFoundError when there is none, APIError for another
        status."""
        msg = await self.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout)
        status = msg.headers.get("Status") if msg.headers else None
        if status and not msg.data:
            if status == "404":
                raise NotFoundError
            raise APIError.from_msg(msg)
        return msg


    async def last_matching(self, stream: str, subject_filter: str,
                            timeout: float = PUBLISH_TIMEOUT) -> Found | None:
        """The last message on any subject matching ``subject_filter`` (wildcards
        allowed), by direct get; None when there is none. Its subject, headers
        and payload are on the answer (:class:`Found`)."""
        return await self.direct_get(stream, {"last_by_subj": subject_filter}, timeout)

    async def direct_get(self, stream: str, query: dict[str, object],
                         timeout: float = PUBLISH_TIMEOUT) -> Found | None:
        """The message a direct get's ``query`` names (``last_by_subj``, ``seq``
        with ``next_by_subj``); None when there is none."""
        msg = await self.request(f"$JS.API.DIRECT.GET.{stream}", orjson.dumps(query), timeout)
        headers = msg.headers or {}
        status = headers.get("Status")
        if status and not msg.data:
            if status == "404":
                return None
            raise APIError.from_msg(msg)
        return Found(int(headers.get("Nats-Sequence", 0)), False,
                     headers.get("Nats-Subject", ""), headers, msg.data or b"")

    async def purge(self, stream: str, subject_filter: str, below: int = 0,
                    timeout: float = PUBLISH_TIMEOUT) -> int:
        """Remove the messages on subjects matching ``subject_filter`` (only those
        with a sequence below ``below``, when given); how many went."""
        query: dict[str, object] = {"filter": subject_filter}
        if below:
            query["seq"] = below
        reply = await self.request(f"$JS.API.STREAM.PURGE.{stream}", orjson.dumps(query),
                                   timeout)
        answer = orjson.loads(reply.data)
        if "error" in answer:
            raise APIError.from_error(answer["error"])
        return int(answer.get("purged", 0))

    async def atomic_batch(
        self, items: list[tuple[str, bytes, dict[str, str]]], stream: str, batch_id: str
    ) -> Stored:
        """Publish ``items`` (subject, payload, headers) as one atomic batch
        (nats-server 2.12+, ``allow_atomic``): all are stored, with one write to
        disk, or none (APIError: a compare-and-set among them failed, the batch
        was incomplete)."""
        last = len(items) - 1
        for index, (subject, data, headers) in enumerate(items[:-1]):
            await self.nc.publish(subject, data, headers={
                **headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index + 1)})
        subject, data, headers = items[last]
        return await self.js_publish(subject, data, stream, {
            **headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(last + 1),
            "Nats-Batch-Commit": "1"})


@dataclass
class Found(Stored):
    """A message read by direct get: where it is and what it holds."""

    subject: str = ""
    headers: dict[str, str] | None = None
    data: bytes = b""


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(NatsTimeout())
