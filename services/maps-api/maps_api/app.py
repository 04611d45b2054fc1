"""maps-api's HTTP interface (≈ proxymap(8) over HTTP).

This first version answers lookups against any ``type:name`` table through
the shared maps library; table storage in Redis, uploads, socketmap and
tcp_table come with the lookup-table issue.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

from postbus.maps.table import TableConfigError, TableRetry, open_table


def create_app() -> FastAPI:
    app = FastAPI(title="Postbus maps-api", version="0.1.0")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/lookup")
    async def lookup(table: str, key: str) -> dict[str, str]:
        """200 with the value when found, 404 when not, 503 on a temporary error."""
        try:
            value = await open_table(table, strict=True).lookup(key)
        except TableConfigError as exc:
            raise HTTPException(400, str(exc)) from exc
        except TableRetry as exc:
            raise HTTPException(503, str(exc)) from exc
        if value is None:
            raise HTTPException(404, "not found")
        return {"table": table, "key": key, "value": value}

    return app
