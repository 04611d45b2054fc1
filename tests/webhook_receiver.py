"""A real HTTP webhook receiver for tests: a ThreadingHTTPServer on a loopback port.

It records every POST (headers, body, when) and answers as its ``script``
says: for the n-th POST of one ``webhook-id`` it takes ``script[n]`` (the
last entry from then on): an HTTP status to answer, or ``"hang"`` to answer
nothing until the test ends. Signatures are checked here with a verifier
written from the Standard Webhooks specification, independent of the
sender's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answer: int | str = 0  # the status answered, "hang", or "held" (until the gate opens)

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")


def verify(secret: str, request: Request, tolerance: float = 300.0) -> bool:
    """Standard Webhooks verification: HMAC-SHA256 over id.timestamp.body, any v1 match."""
    key = (base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_")
           else secret.encode())
    msg_id = request.headers["webhook-id"]
    stamp = request.headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + request.body, hashlib.sha256).digest()
    ).decode()
    offered = [part.split(",", 1)[1] for part in request.headers["webhook-signature"].split()
               if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


class Receiver:
    def __init__(self, script: list[int | str] | None = None, delay: float = 0.0,
                 hold_from: int | None = None) -> None:
        self.script: list[int | str] = script or [200]
        self.delay = delay
        self.hold_from = hold_from  # POSTs from the n-th on get no reply until gate opens
        self.gate = threading.Event()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends every "hang"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                  body, time.time())
                with receiver.lock:
                    seen = sum(1 for r in receiver.requests if r.event_id == request.event_id)
                    action = receiver.script[min(seen, len(receiver.script) - 1)]
                    held = receiver.hold_from is not None and len(receiver.requests) >= \
                        receiver.hold_from
                    request.answer = "held" if held else action
                    receiver.requests.append(request)
                if receiver.delay:
                    time.sleep(receiver.delay)
                if held:
                    receiver.gate.wait(60)
                if action == "hang":
                    receiver.release.wait(60)
                    return
                status = int(action)
                text = b"ok\n" if status < 300 else b"receiver says no\n"
                try:
                    self.send_response(status)
                    self.send_header("content-length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:  # the sender is gone (killed)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/postbus?token=s3cret"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def ids(self, answered: Callable[[Request], bool] = lambda r: True) -> set[str]:
        return {r.event_id for r in self.snapshot() if answered(r)}

    def wait_for(self, check: Callable[[list[Request]], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self.snapshot()):
                return True
            time.sleep(0.05)
        return check(self.snapshot())
