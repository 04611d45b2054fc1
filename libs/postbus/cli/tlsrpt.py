"""postbus tlsrpt: the TLS-RPT results of a day, and sending its reports now.

``postbus tlsrpt [--day YYYY-MM-DD]`` prints the day's results per policy
domain as JSON (today, UTC, by default); ``--send-now`` builds and sends the
reports to each domain's ``rua`` at once, as the daily run in the smtp agents
does for the day before (see :mod:`postbus.tlsrpt.send`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from postbus.config.loader import Config
from postbus.logging import setup_logging
from postbus.maps import context as maps_context
from postbus.tlsrpt.send import send_day
from postbus.tlsrpt.store import day_entries, day_of


async def _run(cfg: Config, day: str, send: bool) -> list[str]:
    maps_context.configure(cfg.get("postbus_redis_url"))
    try:
        redis = maps_context.redis_client()
        if send:
            return await send_day(cfg, redis, day)
        return [json.dumps(e.json(), sort_keys=True) for e in await day_entries(redis, day)]
    finally:
        await maps_context.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="postbus tlsrpt")
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("--day", default="", help="the UTC day (YYYY-MM-DD); default today")
    parser.add_argument("--send-now", action="store_true",
                        help="send the day's reports now")
    args = parser.parse_args(argv)
    cfg = Config.load(args.config_dir)
    setup_logging(f"{cfg.get('syslog_name')}/tlsrpt", cfg.get("myhostname"),
                  maillog_file=cfg.get("maillog_file"))
    try:
        lines = asyncio.run(_run(cfg, args.day or day_of(), args.send_now))
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"postbus tlsrpt: fatal: {exc}", file=sys.stderr)
        return 75
    for line in lines:
        print(line)
    return 0
