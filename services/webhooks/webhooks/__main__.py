"""webhooks: POST the queue's events to one endpoint (a master.cf ``webhooks`` line).

    crm       unix  -       -       n       -       1       webhooks
      -o postbus_webhook_url=https://crm.example.com/postbus
      -o postbus_webhook_events=delivered,bounced,expired
      -o postbus_webhook_secret=$crm_webhook_secret

Without ``postbus_webhook_url`` the service runs and sends nothing (the
shipped compose and Helm files carry such a line, ready to be given a URL).
Settings are read at start; a reload that changes them is logged, and
takes effect at the next start of the process.
"""

from __future__ import annotations

import asyncio
import logging

from postbus import dead_letters, events
from postbus.bus import subjects as s
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.service import ServiceContext, consume, run
from webhooks.dispatch import Dispatcher, consumer_config, ensure_consumer, watch_pending
from webhooks.sender import Sender
from webhooks.settings import Settings

log = logging.getLogger("postbus.webhooks")


async def main(ctx: ServiceContext) -> None:
    try:
        settings = Settings.from_config(ctx.cfg, ctx.service)
    except ConfigError:
        ctx.stopping.set()  # the fatal line alone: no "disconnected" warning on the way out
        raise
    assert ctx.nc is not None
    js = ctx.nc.jetstream()

    def reloaded(cfg: Config) -> None:
        try:
            changed = Settings.from_config(cfg, ctx.service) != settings
        except Exception as exc:
            log.warning("warning: webhook %s: %s", ctx.service, exc)
            return
        if changed:
            log.warning("warning: webhook %s: new settings take effect at the next start",
                        ctx.service)

    ctx.on_reload(reloaded)
    if not settings.url:
        log.info("webhook %s: no postbus_webhook_url: nothing to send", settings.name)
        ctx.ready = True
        await ctx.stopping.wait()
        return
    unrecorded = settings.kinds - events.recorded
    if unrecorded:
        log.warning("warning: webhook %s: postbus_events_record leaves out %s: never sent",
                    settings.name, ", ".join(sorted(unrecorded)))
    await dead_letters.ensure_stream(js, ctx.cfg)
    await ensure_consumer(js, settings)
    sender = Sender(settings)
    dispatcher = Dispatcher(settings, js, sender)
    pending = asyncio.create_task(watch_pending(js, settings, ctx.stopping))
    log.info("webhook %s: events %s to %s", settings.name, ", ".join(sorted(settings.kinds)),
             settings.shown_url)
    try:
        await consume(
            ctx, stream=s.EVENTS_STREAM, subject=s.EVENT_SUBJECTS,
            durable=s.webhook_consumer(settings.name), handler=dispatcher.handle,
            concurrency=settings.concurrency, batch=settings.concurrency,
            config=consumer_config(settings),
        )
    finally:
        pending.cancel()
        await sender.aclose()


if __name__ == "__main__":
    run("webhooks", main)
