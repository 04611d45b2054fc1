"""maps-api's HTTP interface (≈ proxymap(8) and postmap over HTTP).

==========  ======================================  =========================================
method      path                                    does
==========  ======================================  =========================================
GET         /v1/tables                              list the tables stored in Redis
GET         /v1/tables/{type:name}/lookup?key=K     200 found, 404 not found, 503 retry
PUT         /v1/tables/{type:name}                  replace the whole table (atomic), version
POST        /v1/tables/{type:name}/keys             add or update keys, version
DELETE      /v1/tables/{type:name}/keys/{key}       delete one key (404 when absent)
GET         /openapi.json, /docs                    the OpenAPI document
==========  ======================================  =========================================

``type:name`` is written as in main.cf, slashes included
(``/v1/tables/hash:/etc/postbus/virtual/lookup?key=a@example.com``).
Lookups answer only approved tables (see :mod:`maps_api.tables`; 403
otherwise).  Writes need ``Authorization: Bearer <postbus_maps_api_token>``
(401 without it; 403 for every write while the token is empty), go to
``hash:``/``btree:``/``lmdb:``/``cdb:``/``dbm:``/``sdbm:``/``redis:`` tables in
Redis, fold keys to lower case as ``postbus postmap`` does, and publish a
change event on the bus.  A temporary failure (Redis down) is 503.
Request bodies are bounded (413 beyond the limits of :mod:`maps_api.body_limit`).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from maps_api.body_limit import BodyLimit
from maps_api.tables import NotApproved, TableService
from postbus.maps.table import TableConfigError, TableRetry

VERSION = "1.0.0"


class LookupResult(BaseModel):
    table: str
    key: str
    found: bool
    value: str | None = None


class TableInfo(BaseModel):
    table: str = Field(description="type:name, e.g. hash:/etc/postbus/virtual")
    version: int = Field(description="incremented on every change")
    entries: int


class TableList(BaseModel):
    tables: list[TableInfo]


class WriteResult(BaseModel):
    table: str
    version: int
    published: bool = Field(description="whether the change event went out on the bus")
    entries: int | None = None
    key: str | None = None


Entries = dict[str, str]

_bearer = HTTPBearer(auto_error=False, description="postbus_maps_api_token")


def _check_entries(entries: Entries) -> Entries:
    """Refuse what a Postfix table cannot hold: empty keys or values, NUL, newlines."""
    for key, value in entries.items():
        if not key or not value:
            raise HTTPException(422, f"empty key or value for key {key!r}")
        if any(c in key or c in value for c in "\0\n\r"):
            raise HTTPException(422, f"NUL or newline in key or value of {key!r}")
    return entries


def create_app(tables: TableService) -> FastAPI:
    app = FastAPI(
        title="Postbus maps-api",
        version=VERSION,
        description="Postfix lookup tables over HTTP: lookups, listing and atomic uploads.",
    )
    app.add_middleware(BodyLimit)

    def writer(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if not tables.token:
            raise HTTPException(403, "writes are disabled: postbus_maps_api_token is empty")
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), tables.token.encode()):
            raise HTTPException(401, "bad or missing bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(TableRetry)
    async def retry(request: Request, exc: TableRetry) -> JSONResponse:
        return JSONResponse({"detail": f"temporary lookup failure: {exc}"}, status_code=503)

    @app.exception_handler(NotApproved)
    async def denied(request: Request, exc: NotApproved) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(TableConfigError)
    async def bad_table(request: Request, exc: TableConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/tables", response_model=TableList)
    async def list_tables() -> Any:
        """The tables stored in Redis, with their version and number of entries."""
        return {"tables": await tables.store.list_tables()}

    @app.get(
        "/v1/tables/{spec:path}/lookup",
        response_model=LookupResult,
        responses={404: {"model": LookupResult, "description": "not found"},
                   403: {"description": "table not approved"},
                   503: {"description": "temporary failure: retry"}},
    )
    async def lookup(spec: str, key: Annotated[str, Query()]) -> Any:
        """Look ``key`` up in table ``spec``, with the table's own rules (case folding...)."""
        value = await tables.lookup(spec, key)
        if value is None:
            return JSONResponse(
                LookupResult(table=spec, key=key, found=False).model_dump(), status_code=404
            )
        return LookupResult(table=spec, key=key, found=True, value=value)

    @app.put("/v1/tables/{spec:path}", response_model=WriteResult,
             response_model_exclude_none=True, dependencies=[Depends(writer)],
             responses={413: {"description": "body larger than MAX_TABLE_BODY"}})
    async def replace(spec: str, entries: Entries) -> Any:
        """Replace the whole table with ``{key: value, ...}``; readers never see half of it."""
        _check_entries(entries)
        version, published = await tables.replace(spec, entries)
        return WriteResult(table=spec, version=version, published=published, entries=len(entries))

    @app.post("/v1/tables/{spec:path}/keys", response_model=WriteResult,
              response_model_exclude_none=True, dependencies=[Depends(writer)],
              responses={413: {"description": "body larger than MAX_TABLE_BODY"}})
    async def add(spec: str, entries: Entries) -> Any:
        """Add keys, or change their values (the table is created when missing)."""
        _check_entries(entries)
        version, published = await tables.add(spec, entries)
        return WriteResult(table=spec, version=version, published=published, entries=len(entries))

    @app.delete("/v1/tables/{spec:path}/keys/{key}", response_model=WriteResult,
                response_model_exclude_none=True,
                responses={404: {"description": "no such key"}},
                dependencies=[Depends(writer)])
    async def delete(spec: str, key: str) -> Any:
        """Delete one key (``%2F`` cannot be used in it; such keys need PUT)."""
        version, published = await tables.delete(spec, key)
        if version is None:
            raise HTTPException(404, f"{key} not found in {spec}")
        return WriteResult(table=spec, version=version, published=published, key=key)

    return app
