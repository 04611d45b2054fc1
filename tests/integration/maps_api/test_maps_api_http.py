"""maps-api over HTTP: OpenAPI, bearer-token writes, atomic versions, events, proxy: client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from postbus.bus.subjects import MAPS_CHANGED_SUBJECT
from postbus.maps.table import TableRetry, open_table
from postbus.maps.types import proxy
from postbus.servers import ServerProcess, free_port
from tests.integration.maps_api.conftest import MapsApi

pytestmark = pytest.mark.integration


def _virtual(tmp_path: Path) -> str:
    return f"hash:{tmp_path}/virtual"


def test_openapi_is_published(maps_api: MapsApi) -> None:
    doc = httpx.get(maps_api.url + "/openapi.json").json()
    paths = doc["paths"]
    assert "/v1/tables" in paths
    assert "get" in paths["/v1/tables/{spec}/lookup"]
    assert {"put"} <= set(paths["/v1/tables/{spec}"])
    assert "delete" in paths["/v1/tables/{spec}/keys/{key}"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic czNjcmV0"}])
def test_writes_need_the_bearer_token(maps_api: MapsApi, tmp_path: Path,
                                      headers: dict[str, str]) -> None:
    spec = _virtual(tmp_path)
    assert httpx.put(f"{maps_api.url}/v1/tables/{spec}", json={"a": "b"},
                     headers=headers).status_code == 401
    assert httpx.post(f"{maps_api.url}/v1/tables/{spec}/keys", json={"a": "b"},
                      headers=headers).status_code == 401
    assert httpx.delete(f"{maps_api.url}/v1/tables/{spec}/keys/a",
                        headers=headers).status_code == 401
    assert httpx.get(f"{maps_api.url}/v1/tables").json() == {"tables": []}


def test_upload_lookup_add_delete_with_versions(maps_api: MapsApi, tmp_path: Path) -> None:
    spec, url, h = _virtual(tmp_path), maps_api.url, maps_api.headers()
    r = httpx.put(f"{url}/v1/tables/{spec}", headers=h,
                  json={"User@Example.COM": "user1", "@example.org": "catchall"})
    assert r.status_code == 200, r.text
    assert r.json() == {"table": spec, "version": 1, "published": True, "entries": 2}

    def lookup(key: str) -> httpx.Response:
        return httpx.get(f"{url}/v1/tables/{spec}/lookup", params={"key": key})

    assert lookup("user@example.com").json() == {
        "table": spec, "key": "user@example.com", "found": True, "value": "user1"}
    assert lookup("USER@EXAMPLE.COM").json()["value"] == "user1"  # keys are folded
    missing = lookup("nobody@example.com")
    assert missing.status_code == 404 and missing.json()["found"] is False

    r = httpx.post(f"{url}/v1/tables/{spec}/keys", headers=h, json={"New@Example.com": "n"})
    assert r.json()["version"] == 2
    assert lookup("new@example.com").json()["value"] == "n"
    r = httpx.delete(f"{url}/v1/tables/{spec}/keys/USER@example.com", headers=h)
    assert r.status_code == 200 and r.json()["version"] == 3
    assert lookup("user@example.com").status_code == 404
    assert httpx.delete(f"{url}/v1/tables/{spec}/keys/ghost", headers=h).status_code == 404

    # replace is whole-table: the old keys are gone
    r = httpx.put(f"{url}/v1/tables/{spec}", headers=h, json={"only": "one"})
    assert r.json()["version"] == 4
    assert lookup("new@example.com").status_code == 404
    assert httpx.get(f"{url}/v1/tables").json() == {
        "tables": [{"table": spec, "version": 4, "entries": 1}]}


def test_bad_writes_and_unapproved_reads(maps_api: MapsApi, tmp_path: Path) -> None:
    url, h = maps_api.url, maps_api.headers()
    for body in ({"": "x"}, {"k": ""}, {"k\0": "v"}, {"k": "a\nb"}, ["not", "an", "object"],
                 {"k": 1}):
        assert httpx.put(f"{url}/v1/tables/{_virtual(tmp_path)}", json=body,
                         headers=h).status_code == 422, body
    for spec in ("regexp:/etc/postfix/x", "hash:relative/path", "nocolon"):
        assert httpx.put(f"{url}/v1/tables/{spec}", json={"a": "b"},
                         headers=h).status_code == 400, spec
    # any key/value file on the host is not readable: only approved tables are
    r = httpx.get(f"{url}/v1/tables/texthash:/etc/passwd/lookup", params={"key": "root"})
    assert r.status_code == 403
    # a configured proxy: table is (Postfix's proxy_read_maps rule)
    r = httpx.get(f"{url}/v1/tables/texthash:{tmp_path}/aliases/lookup",
                  params={"key": "postmaster"})
    assert r.json()["value"] == "root"


def test_writes_refused_without_a_token(tmp_path: Path, redis: ServerProcess,
                                        nats: ServerProcess) -> None:
    from tests.integration.maps_api.conftest import start_maps_api, stop_maps_api

    api = start_maps_api(tmp_path, redis, nats, "postbus_maps_api_token =\n")
    try:
        r = httpx.put(f"{api.url}/v1/tables/redis:x", json={"a": "b"})
        assert r.status_code == 403
        r = httpx.put(f"{api.url}/v1/tables/redis:x", json={"a": "b"}, headers=api.headers())
        assert r.status_code == 403
    finally:
        stop_maps_api(api)


async def test_every_change_is_published(maps_api: MapsApi, tmp_path: Path,
                                         nats: ServerProcess) -> None:
    import nats as nats_client

    nc = await nats_client.connect(nats.url)
    events: asyncio.Queue[str] = asyncio.Queue()

    async def got(msg: object) -> None:
        await events.put(msg.data.decode())  # type: ignore[attr-defined]

    await nc.subscribe(MAPS_CHANGED_SUBJECT, cb=got)
    await nc.flush()
    spec = _virtual(tmp_path)
    async with httpx.AsyncClient(base_url=maps_api.url, headers=maps_api.headers()) as http:
        await http.put(f"/v1/tables/{spec}", json={"a": "1"})
        await http.post(f"/v1/tables/{spec}/keys", json={"b": "2"})
        await http.delete(f"/v1/tables/{spec}/keys/a")
        await http.put("/v1/tables/redis:blocklist", json={"x": "REJECT"})
    got_events = [await asyncio.wait_for(events.get(), 5) for _ in range(4)]
    assert got_events == [spec, spec, spec, "redis:blocklist"]
    await nc.close()


async def test_proxy_table_reads_through_maps_api(maps_api: MapsApi, tmp_path: Path) -> None:
    spec = _virtual(tmp_path)
    httpx.put(f"{maps_api.url}/v1/tables/{spec}", json={"a@example.com": "b@example.net"},
              headers=maps_api.headers())
    proxy.configure(maps_api.url)
    try:
        table = open_table(f"proxy:{spec}")
        assert table.fixed  # as the proxied hash: table
        assert not open_table(f"proxy:regexp:{tmp_path}/x").fixed
        assert await table.lookup("A@Example.com") == "b@example.net"
        assert await table.lookup("nobody@example.com") is None
        with pytest.raises(TableRetry, match="403"):  # not approved: never "not found"
            await open_table("proxy:texthash:/etc/passwd").lookup("root")
        proxy.configure(f"http://127.0.0.1:{free_port()}")  # nothing listens there
        with pytest.raises(TableRetry, match="maps-api"):
            await table.lookup("a@example.com")
        proxy.configure(maps_api.url + "/nonexistent-prefix")  # a 404 that is not an answer
        with pytest.raises(TableRetry):
            await table.lookup("a@example.com")
    finally:
        proxy.configure(proxy.DEFAULT_URL)
        await proxy.aclose()
