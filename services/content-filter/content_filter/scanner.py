"""The HTTP scanner hook (rspamd's /checkv2 shape).

The message is POSTed to postbus_content_filter_scanner_url with the
envelope in request headers (From, Rcpt, IP, Helo, Queue-Id); the JSON
reply's ``action`` (``no action``, ``greylist``, ``add header``, ``rewrite
subject``, ``soft reject``, ``reject``) and ``score`` become a
:class:`Verdict`. The optional score thresholds
(postbus_content_filter_reject_score, _add_header_score) override the
scanner's own action when reached.

A scanner that does not answer within postbus_content_filter_scanner_timeout,
refuses the connection, or answers something that is not such a reply gets
postbus_content_filter_default_action (accept, tempfail, reject, hold),
logged once when the outage starts and once when it ends.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx
import orjson

from postbus import metrics
from postbus.config.conv import ConfigError
from postbus.config.loader import Config

log = logging.getLogger("postbus.content-filter")

DEFAULT_ACTIONS = ("accept", "tempfail", "reject", "hold")
#: rspamd's actions, as the content-filter's own verdicts
SCANNER_ACTIONS = {
    "no action": "accept", "greylist": "accept", "add header": "add_header",
    "rewrite subject": "rewrite_subject", "soft reject": "tempfail", "reject": "reject",
}


@dataclass(frozen=True)
class Verdict:
    """accept, add_header, rewrite_subject, tempfail, reject or hold."""

    action: str
    score: float | None = None
    subject: str = ""
    reason: str = ""


def _score(cfg: Config, name: str) -> float | None:
    value = cfg.get(name).strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not a number", parameter=name) from None


def default_action(cfg: Config) -> str:
    value = cfg.get("postbus_content_filter_default_action").strip().lower()
    if value not in DEFAULT_ACTIONS:
        raise ConfigError(f"{value!r} is not one of {', '.join(DEFAULT_ACTIONS)}",
                          parameter="postbus_content_filter_default_action")
    return value


class Scanner:
    def __init__(self, cfg: Config) -> None:
        self.url = cfg.get("postbus_content_filter_scanner_url").strip()
        self.timeout = cfg.time("postbus_content_filter_scanner_timeout")
        self.default = default_action(cfg)
        self.reject_score = _score(cfg, "postbus_content_filter_reject_score")
        self.header_score = _score(cfg, "postbus_content_filter_add_header_score")
        self.down = False
        self._client: httpx.AsyncClient | None = None

    def __bool__(self) -> bool:
        return bool(self.url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _verdict(self, reply: dict[str, object]) -> Verdict:
        raw_action = reply.get("action")
        raw_score = reply.get("score", 0.0)
        if not isinstance(raw_action, str) or raw_action.lower() not in SCANNER_ACTIONS:
            raise ValueError(f"unknown scanner action {raw_action!r}")
        if not isinstance(raw_score, int | float):
            raise ValueError(f"bad scanner score {raw_score!r}")
        action, score = SCANNER_ACTIONS[raw_action.lower()], float(raw_score)
        if self.reject_score is not None and score >= self.reject_score:
            action = "reject"
        elif (self.header_score is not None and score >= self.header_score
              and action == "accept"):
            action = "add_header"
        subject = reply.get("subject")
        return Verdict(action, score, subject if isinstance(subject, str) else "")

    async def scan(self, message: bytes, queue_id: str, sender: str, recipients: list[str],
                   client_addr: str, helo: str) -> Verdict:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        headers = [("Queue-Id", queue_id), ("From", sender)]
        headers += [("Rcpt", r) for r in recipients]
        if client_addr:
            headers.append(("IP", client_addr))
        if helo:
            headers.append(("Helo", helo))
        start = time.monotonic()
        try:
            reply = await self._client.post(self.url, content=message, headers=headers)
            reply.raise_for_status()
            verdict = self._verdict(orjson.loads(reply.content))
        except (httpx.HTTPError, orjson.JSONDecodeError, ValueError, AttributeError) as exc:
            why = "timed out" if isinstance(exc, httpx.TimeoutException) else \
                str(exc) or type(exc).__name__
            metrics.content_filter_checks.labels("scanner", "error").inc()
            if not self.down:
                log.warning("warning: scanner %s: %s; using postbus_content_filter_"
                            "default_action = %s until it answers", self.url, why,
                            self.default)
                self.down = True
                metrics.content_filter_scanner_down.set(1)
            return Verdict(self.default, reason=f"content scanner unavailable: {why}")
        finally:
            metrics.content_filter_check_seconds.labels("scanner").observe(
                time.monotonic() - start)
        if self.down:
            log.info("scanner %s answers again", self.url)
            self.down = False
            metrics.content_filter_scanner_down.set(0)
        metrics.content_filter_checks.labels("scanner", verdict.action).inc()
        return verdict
