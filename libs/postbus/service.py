"""The skeleton every service runs under (≈ Postfix single_server.c / multi_server.c).

A role's ``__main__`` hands :func:`run` its program name and a coroutine;
the skeleton does the rest: arguments (``-c``, ``-n``, ``-o``, ``-v``,
``--metrics``), configuration, Postfix-style logging, the health/metrics
endpoint, the NATS connection and streams, and a graceful drain on SIGTERM.
:func:`consume` (from :mod:`postbus.bus.consumer`) is the shared JetStream
pull-consumer loop, with its retry and poison policy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.errors import NoServersError

from postbus import collector, events, fatal, metrics
from postbus.bus.jetstream import connect, ensure_streams
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.config.master_cf import MasterEntry
from postbus.health import HealthServer
from postbus.logging import setup_logging
from postbus.maps import context as maps_context
from postbus.maps.types import proxy as proxy_table
from postbus.queue.file import QueueFile
from postbus.queue.work import WorkBus

log = logging.getLogger("postbus.service")


@dataclass
class ServiceContext:
    """What a role's main coroutine gets: configuration, bus, queue, stop signal."""

    cfg: Config
    program: str  # Postfix daemon name: smtpd, qmgr, smtp, local, ...
    service: str  # master.cf service name, e.g. "127.0.0.1:2525" or "relay"
    service_type: str = ""  # master.cf type (inet, unix, ...) when given as -n name/type
    nc: NATS | None = None
    queue_file: QueueFile | None = None
    work_bus: WorkBus | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    reload_hooks: list[Callable[[Config], None]] = field(default_factory=list)

    def on_reload(self, hook: Callable[[Config], None]) -> None:
        """Call ``hook(new_cfg)`` after main.cf or master.cf changed and loaded cleanly."""
        self.reload_hooks.append(hook)

    def master_entry(self) -> MasterEntry | None:
        """This process's master.cf line (name/type, so smtp/inet and smtp/unix differ)."""
        key = f"{self.service}/{self.service_type}" if self.service_type else self.service
        return self.cfg.master_entry(key)

    @property
    def queue(self) -> QueueFile:
        assert self.queue_file is not None, "service started without the bus"
        return self.queue_file

    @property
    def work(self) -> WorkBus:
        assert self.work_bus is not None, "service started without the bus"
        return self.work_bus


def parse_args(program: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program)
    parser.add_argument("-c", dest="config_dir", default=None, help="configuration directory")
    parser.add_argument("-n", dest="service", default=program, help="master.cf service name")
    parser.add_argument(
        "-o", dest="overrides", action="append", default=[], help="name=value override"
    )
    parser.add_argument("-v", dest="verbose", action="store_true", help="verbose logging")
    parser.add_argument("--metrics", default="", help="host:port for /metrics and /healthz")
    return parser.parse_args(argv)


def _overrides(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name.strip()] = value.strip()
    return out


def run(
    program: str,
    main: Callable[[ServiceContext], Awaitable[None]],
    *,
    needs_bus: bool = True,
    argv: list[str] | None = None,
) -> None:
    """Run one service process until SIGTERM.

    A condition that stops the role at start (a configuration error, a
    listener that cannot bind) is logged as one Postfix ``fatal:`` line, to
    the maillog and stderr, and the process exits with status 1; the master
    shows that line. Only an unexpected exception (a bug) adds a traceback.
    """
    args = parse_args(program, argv)
    try:
        cfg = Config.load(
            args.config_dir, service=args.service, overrides=_overrides(args.overrides)
        )
    except Exception as exc:  # whatever stops the configuration from loading is fatal
        fatal.log_early(program, args.config_dir)
        fatal.fatal(str(exc))
    setup_logging(
        f"{cfg.get('syslog_name')}/{program}",
        cfg.get("myhostname"),
        maillog_file=cfg.get("maillog_file"),
        json_format=cfg.get("postbus_log_format") == "json",
        verbose=args.verbose,
    )
    metrics.build_info.labels(program).info({"version": "0.1.0"})
    name, _, kind = args.service.partition("/")
    ctx = ServiceContext(cfg=cfg, program=program, service=name, service_type=kind)
    loader = ConfigWatcher(ctx, args.config_dir, _overrides(args.overrides))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    profile = os.environ.get("POSTBUS_PROFILE_DIR")  # developers: cProfile each role
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    try:
        asyncio.run(_serve(ctx, main, needs_bus, args.metrics, loader))
    except ConfigError as exc:
        fatal.fatal(str(fatal.located(exc, ctx.cfg)))
    except OSError as exc:
        text = fatal.bind_error(exc)
        if text is None:
            fatal.crash(program)
        fatal.fatal(text)
    except SystemExit as exc:  # a role's own SystemExit("<program>: fatal: text")
        if not isinstance(exc.code, str):
            raise
        fatal.fatal(exc.code.split(": fatal: ", 1)[-1])
    except Exception:
        fatal.crash(program)
    finally:
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile, f"{program}-{ctx.service}.prof"))


async def _serve(
    ctx: ServiceContext,
    main: Callable[[ServiceContext], Awaitable[None]],
    needs_bus: bool,
    metrics_addr: str,
    watcher: ConfigWatcher,
) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctx.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, watcher.reload)
    watch_task = asyncio.create_task(watcher.watch())
    health = None
    if metrics_addr:
        host, _, port = metrics_addr.rpartition(":")
        health = HealthServer(host.strip("[]") or "0.0.0.0", int(port), lambda: ctx.ready)
        await health.start()
    try:
        if needs_bus:
            ctx.nc = await _connect_until_up(ctx)
            await ensure_streams(ctx.nc.jetstream(), ctx.cfg.int("postbus_stream_replicas"))
            events.configure(ctx.cfg)
            await events.ensure_stream(ctx.nc.jetstream(), ctx.cfg)
            js = ctx.nc.jetstream()
            ctx.queue_file, ctx.work_bus = QueueFile(ctx.nc, js), WorkBus(ctx.nc, js)
        await _open_maps(ctx)
        with collector.settled():  # what startup made stays out of the collector's way
            await main(ctx)
    finally:
        with contextlib.suppress(Exception):
            await maps_context.aclose()
            await proxy_table.aclose()
        if ctx.work_bus is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ctx.work_bus.drain(), 2)
        if ctx.nc is not None and not ctx.nc.is_closed:
            # handlers have finished; flush what they published, then close
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ctx.nc.flush(), 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ctx.nc.close(), 2)
        if health:
            await health.close()
        watch_task.cancel()


class ConfigWatcher:
    """Reload without losing mail (≈ postfix reload): on SIGHUP or when main.cf or
    master.cf changes, load the files again; apply them only if they are valid,
    else keep the last good configuration and say why."""

    INTERVAL = 2.0

    def __init__(self, ctx: ServiceContext, config_dir: str | None, overrides: dict[str, str]):
        self.ctx = ctx
        self.config_dir = config_dir
        self.overrides = overrides
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[float, ...]:
        files = (self.ctx.cfg.config_dir / "main.cf", self.ctx.cfg.config_dir / "master.cf")
        return tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL)
            stamp = self._stamp()
            if stamp != self.stamp:
                self.stamp = stamp
                self.reload()

    def reload(self) -> None:
        try:
            key = self.ctx.service + (f"/{self.ctx.service_type}" if self.ctx.service_type else "")
            cfg = Config.load(self.config_dir, service=key, overrides=self.overrides)
        except Exception as exc:
            log.error("%s; keeping the last good configuration", exc)
            return
        self.ctx.cfg = cfg
        for hook in [events.configure, *self.ctx.reload_hooks]:
            try:
                hook(cfg)
            except Exception as exc:
                log.error("reload of %s failed: %s", self.ctx.program, exc)
        log.info("reload -- configuration %s", cfg.config_dir)


async def _open_maps(ctx: ServiceContext) -> None:
    """Point the lookup tables at Redis and maps-api; drop cached answers of a
    table whenever `postbus postmap` or maps-api changes it."""
    maps_context.configure(ctx.cfg.get("postbus_redis_url"), ctx.nc)
    proxy_table.configure(ctx.cfg.get("postbus_maps_api_url"))
    if ctx.nc is not None:
        await maps_context.watch_changes(ctx.nc)


async def _connect_until_up(ctx: ServiceContext) -> NATS:
    url = ctx.cfg.get("postbus_nats_url")
    delay = 0.1
    while True:
        try:
            return await connect(url, f"{ctx.program}/{ctx.service}", closing=ctx.stopping.is_set)
        except (NoServersError, OSError, TimeoutError) as exc:
            if ctx.stopping.is_set():
                raise
            log.warning("cannot connect to NATS at %s: %s; retrying", url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


# The consumer loop lives in postbus.bus.consumer; roles may still import it from here.
from postbus.bus.consumer import Handler, consume, keep_alive  # noqa: E402

__all__ = ["Handler", "ServiceContext", "consume", "keep_alive", "run"]
