"""Peers of the content-filter tests: a loopback DNS server and an rspamd-like HTTP
scanner, each a real server in a thread (the e2e tests are synchronous)."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsPeer:
    """Answers UDP queries from a zone {(name, type): [rdata, ...]}; others NXDOMAIN."""

    def __init__(self, zone: dict[tuple[str, str], list[str]]) -> None:
        self.zone = {(n.lower().rstrip("."), t): v for (n, t), v in zone.items()}
        peer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(peer.answer(data), self.client_address)

        self.server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().lower().rstrip(".")
        rtype = dns.rdatatype.to_text(question.rdtype)
        if not any(n == name for n, _ in self.zone):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rtype) in self.zone:
            reply.answer.append(
                dns.rrset.from_text(name + ".", 60, "IN", rtype, *self.zone[(name, rtype)]))
        return reply.to_wire()

    def __enter__(self) -> DnsPeer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScannerPeer:
    """An rspamd /checkv2 stand-in over real HTTP: the reply is chosen by the message's
    Subject (``action=<rspamd action>``, ``score=<n>``, ``stall=<seconds>``)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, list[str]], bytes]] = []
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with peer.lock:
                    peer.requests.append(({k: self.headers.get_all(k) or []
                                           for k in self.headers}, body))
                reply = peer.reply(body)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/checkv2"

    @staticmethod
    def reply(body: bytes) -> dict[str, object]:
        subject = ""
        for line in body.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(b"subject:"):
                subject = line[8:].decode().strip()
        words = dict(w.split("=", 1) for w in subject.split() if "=" in w)
        if "stall" in words:
            time.sleep(float(words["stall"]))
        action = words.get("action", "no_action").replace("_", " ")
        return {"action": action, "score": float(words.get("score", "0")),
                "required_score": 15.0}

    def __enter__(self) -> ScannerPeer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
