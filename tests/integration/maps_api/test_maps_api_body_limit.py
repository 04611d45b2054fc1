"""maps-api's HTTP bodies are bounded: 413 with a JSON detail, before or while reading.

Raw sockets, so the test controls exactly what is sent: a Content-Length
over the limit with no body at all must be answered at once (nothing read);
a chunked body must be cut off near the limit, not read to its end.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from maps_api.body_limit import MAX_BODY, MAX_TABLE_BODY
from tests.integration.maps_api.conftest import TOKEN, MapsApi

pytestmark = pytest.mark.integration

TOO_LARGE_TABLE = {"detail": f"request body larger than {MAX_TABLE_BODY} bytes"}
TOO_LARGE = {"detail": f"request body larger than {MAX_BODY} bytes"}


def _connect(api: MapsApi) -> socket.socket:
    port = int(api.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = s.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _head(method: str, path: str, extra: str) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


@pytest.mark.parametrize("method, path", [("PUT", "/v1/tables/hash:/t"),
                                          ("POST", "/v1/tables/hash:/t/keys")])
def test_content_length_over_the_limit_is_refused_unread(maps_api: MapsApi, method: str,
                                                         path: str) -> None:
    with _connect(maps_api) as s:
        s.sendall(_head(method, path, f"Content-Length: {MAX_TABLE_BODY + 1}\r\n"))
        status, headers, body = _read_response(s)  # no byte of the body was sent
        assert (status, json.loads(body)) == (413, TOO_LARGE_TABLE)
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert s.recv(100) == b""  # and the connection is closed
    assert httpx.get(maps_api.url + "/healthz").status_code == 200


def test_chunked_body_is_cut_off_near_the_limit(maps_api: MapsApi) -> None:
    chunk = b"x" * (1024 * 1024)
    sent = 0
    with _connect(maps_api) as s:
        s.sendall(_head("PUT", "/v1/tables/hash:/t", "Transfer-Encoding: chunked\r\n"))
        try:
            while sent < 4 * MAX_TABLE_BODY:  # far more than allowed, unless cut off
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 2 * MAX_TABLE_BODY, sent
        status, _, body = _read_response(s)
    assert (status, json.loads(body)) == (413, TOO_LARGE_TABLE)
    assert httpx.get(maps_api.url + "/healthz").status_code == 200


def test_other_requests_take_small_bodies(maps_api: MapsApi, tmp_path: Path) -> None:
    url = maps_api.url
    r = httpx.request("GET", url + "/v1/tables", content=b" " * MAX_BODY)
    assert r.status_code == 200, r.text
    r = httpx.request("GET", url + "/v1/tables", content=b" " * (MAX_BODY + 1))
    assert (r.status_code, r.json()) == (413, TOO_LARGE)
    r = httpx.request("DELETE", f"{url}/v1/tables/hash:{tmp_path}/v/keys/a",
                      headers=maps_api.headers(), content=b" " * (MAX_BODY + 1))
    assert (r.status_code, r.json()) == (413, TOO_LARGE)


def test_a_table_write_over_the_small_limit_works(maps_api: MapsApi, tmp_path: Path) -> None:
    entries = {f"user{i}@example.com": "v" * 100 for i in range(2000)}  # ~250 KB
    r = httpx.put(f"{maps_api.url}/v1/tables/hash:{tmp_path}/big", json=entries,
                  headers=maps_api.headers())
    assert r.status_code == 200, r.text
    assert r.json()["entries"] == 2000


def test_the_limit_is_in_the_openapi_document(maps_api: MapsApi) -> None:
    doc = httpx.get(maps_api.url + "/openapi.json").json()
    assert "413" in doc["paths"]["/v1/tables/{spec}"]["put"]["responses"]
    assert "413" in doc["paths"]["/v1/tables/{spec}/keys"]["post"]["responses"]
