"""Bounded request bodies for maps-api's HTTP interface (an ASGI middleware).

Only the two table writes carry a body (``PUT /v1/tables/...`` and ``POST
/v1/tables/.../keys``): they may send :data:`MAX_TABLE_BODY` bytes, any
other request :data:`MAX_BODY`.  A larger body is answered ``413`` with a
JSON ``detail`` that names the limit, and the connection is closed:

* from its ``Content-Length``, before a byte of the body is read;
* sent without a length (chunked), as soon as the bytes counted while the
  application reads them pass the limit; what was read is at most the
  limit and one chunk.

Larger tables are loaded with ``postbus postmap``, which writes to Redis
directly.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "MAX_TABLE_BODY", "BodyLimit"]

#: Bytes of JSON a table write may carry: about 300,000 entries of 100 bytes.
MAX_TABLE_BODY = 32 * 1024 * 1024
#: Bytes of body any other request may carry (none needs one).
MAX_BODY = 64 * 1024

_WRITES = frozenset({"PUT", "POST"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` so the application answers 413 (FastAPI re-raises it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _detail(limit), headers={"Connection": "close"})


def _detail(limit: int) -> str:
    return f"request body larger than {limit} bytes"


def limit_for(scope: Scope) -> int:
    return MAX_TABLE_BODY if scope.get("method") in _WRITES else MAX_BODY


class BodyLimit:
    """``app.add_middleware(BodyLimit)``: 413 for a body over :func:`limit_for`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope)
        length = _content_length(scope)
        if length is not None and length > limit:
            await _send_413(send, limit)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await _send_413(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses it before we run
    return None


async def _send_413(send: Send, limit: int) -> None:
    body = orjson.dumps({"detail": _detail(limit)})
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
