"""``--push=URL``: upload a table into a running cluster through maps-api.

In containers the roles do not see the host's files and Redis is not
reachable from outside; maps-api's HTTP interface is (with a bearer
token).  ``postbus postmap --push=http://maps-api:8080 hash:/etc/postbus/access``
builds the compiled file as usual, then replaces the table of the same name
in the cluster (``PUT /v1/tables/hash:/etc/postbus/access``: atomic, a new
version, a change event to every replica).  The token is
``$POSTBUS_MAPS_API_TOKEN``, else ``postbus_maps_api_token`` of main.cf.
The same upload with curl, from any table postmap can list::

    postbus postmap -s hash:./access | python3 -c 'import json, sys;
        print(json.dumps(dict(l.rstrip("\\n").split("\\t", 1) for l in sys.stdin)))' |
      curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
        --data-binary @- http://maps-api:8080/v1/tables/hash:/etc/postbus/access
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from urllib.parse import quote

from postbus.cli.maptool import Fatal
from postbus.config.loader import Config

__all__ = ["push_table"]

log = logging.getLogger("postbus.maps")

TIMEOUT = 120.0


def push_table(base: str, cfg: Config, table_id: str, entries: dict[str, str]) -> int:
    """PUT the whole table to maps-api at ``base``; its new version there.  Fatal on failure."""
    token = os.environ.get("POSTBUS_MAPS_API_TOKEN") or cfg.get("postbus_maps_api_token")
    url = f"{base}/v1/tables/{quote(table_id, safe='/:@')}"
    body = json.dumps(entries).encode("utf-8", "surrogateescape")
    request = urllib.request.Request(url, data=body, method="PUT", headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
    })
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            answer = json.load(reply)
    except urllib.error.HTTPError as exc:
        raise Fatal(f"push {table_id} to {base}: HTTP {exc.code}: {_detail(exc)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Fatal(f"push {table_id} to {base}: {reason}") from None
    version = int(answer.get("version", 0))
    log.info("pushed %s to %s: %d entries, version %d", table_id, base, len(entries), version)
    return version


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.load(exc).get("detail")
    except (ValueError, OSError, AttributeError):
        detail = None
    return str(detail) if detail else str(exc.reason)
