"""Signing a webhook POST as Standard Webhooks does (www.standardwebhooks.com).

The receiver checks three headers against the raw body:

* ``webhook-id``: the event's id, the same on every attempt (deduplicate on it);
* ``webhook-timestamp``: Unix seconds when this attempt was sent (refuse one
  too far from your clock: a replayed request);
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``,
  one per configured key, separated by spaces (during a key rotation one of
  them matches).

A ``whsec_<base64>`` secret is used as Standard Webhooks' libraries use it
(the decoded bytes are the key); any other secret is the key as UTF-8 text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

ID = "webhook-id"
TIMESTAMP = "webhook-timestamp"
SIGNATURE = "webhook-signature"


def signature(keys: tuple[bytes, ...], event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )


def headers(keys: tuple[bytes, ...], event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        ID: event_id,
        TIMESTAMP: str(timestamp),
        SIGNATURE: signature(keys, event_id, timestamp, body),
    }
