"""maps-api's parameter names (registered in postbus.params) and listen-address parsing."""

from __future__ import annotations

SOCKETMAP_LISTEN = "postbus_maps_api_socketmap_listen"
TCP_LISTEN = "postbus_maps_api_tcp_listen"
TCP_MAPS = "postbus_maps_api_tcp_maps"
TOKEN = "postbus_maps_api_token"
PROXY_READ_MAPS = "proxy_read_maps"

def parse_listen(value: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` → (host, port); empty → None (do not listen)."""
    value = value.strip()
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad listen address {value!r}: need host:port")
    return host or "0.0.0.0", int(port)
