"""check_policy_service: the policy delegation client (≈ smtpd_check.c's
check_policy_service() over attr_clnt.c, SMTPD_POLICY_README).

One :class:`PolicyClient` per server spec in the configuration, shared by
every session of the process.  A request is Postfix 3.7's attribute list,
in its order and with its values; the reply's ``action=`` goes through the
access(5) interpreter (:mod:`ingress_smtpd.restrictions.actions`), so a
garbage action is ``451 4.3.5 Server configuration error``.

Connections are kept and reused (a small pool, since many sessions share a
process): closed after smtpd_policy_service_max_idle unused, at
smtpd_policy_service_max_ttl of age, after smtpd_policy_service_request_limit
requests.  A request has smtpd_policy_service_timeout for connect, send and
reply together, and is tried smtpd_policy_service_try_limit times with
smtpd_policy_service_retry_delay between tries; then
smtpd_policy_service_default_action applies: a server that is down or slow
never hangs a session.  Settings may be overridden per server as Postfix
allows: ``check_policy_service { inet:host:port, timeout=10s,
default_action=DUNNO }``.  The wire format is :mod:`postbus.policy_protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingress_smtpd.restrictions.actions import table_result
from ingress_smtpd.restrictions.registry import Step, restriction
from ingress_smtpd.restrictions.state import CheckState, log
from postbus.config.conv import ConfigError, parse_int, parse_time, split_list
from postbus.config.loader import Config
from postbus.policy_protocol import (
    MAX_LINE,
    PolicyProtocolError,
    encode_attributes,
    read_attributes,
)
from postbus.queue.ids import new_queue_id
from postbus.smtp import xtext

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy

DEFAULT_ACTION = "451 4.3.5 Server configuration problem"  # Postfix's built-in default
_TIMES = {"timeout": "smtpd_policy_service_timeout", "max_idle": "smtpd_policy_service_max_idle",
          "max_ttl": "smtpd_policy_service_max_ttl",
          "retry_delay": "smtpd_policy_service_retry_delay"}
_INTS = {"try_limit": "smtpd_policy_service_try_limit",
         "request_limit": "smtpd_policy_service_request_limit"}
_STRS = {"default_action": "smtpd_policy_service_default_action",
         "policy_context": "smtpd_policy_service_policy_context"}
_instances = itertools.count(1)


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    requests: int = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class PolicyClient:
    """One policy server endpoint and its settings."""

    def __init__(self, spec: str, cfg: Config, param: str) -> None:
        settings: dict[str, str] = {}
        name = spec
        if spec.startswith("{"):
            if not spec.endswith("}"):
                raise ConfigError(f"policy service syntax error: {spec}", parameter=param)
            words = split_list(spec[1:-1])
            if not words:
                raise ConfigError(f'empty policy service: "{spec}"', parameter=param)
            name = words[0]
            for word in words[1:]:
                key, eq, value = word.partition("=")
                key = key.strip()
                if not eq or key not in {**_TIMES, **_INTS, **_STRS}:
                    raise ConfigError(f'policy service {name}: unknown attribute "{key}"',
                                      parameter=param)
                value = value.strip()
                if value.startswith("{") and value.endswith("}"):
                    value = value[1:-1].strip()
                settings[key] = value
        kind, _, where = name.partition(":")
        if kind not in ("inet", "unix") or not where:
            raise ConfigError(f"policy service {name}: use inet:host:port or unix:/path",
                              parameter=param)
        if kind == "inet":
            host, _, port = where.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"policy service {name}: bad inet:host:port", parameter=param)
            self.host, self.port = host.strip("[]"), int(port)
        self.name, self.kind, self.path = name, kind, where
        self.endpoint = where  # attr_clnt's name for it in warnings: no "inet:"/"unix:"

        def get_time(key: str) -> float:
            return parse_time(settings[key], "s") if key in settings else cfg.time(_TIMES[key])

        def get_int(key: str) -> int:
            return parse_int(settings[key]) if key in settings else cfg.int(_INTS[key])

        self.timeout = get_time("timeout")
        self.max_idle = get_time("max_idle")
        self.max_ttl = get_time("max_ttl")
        self.retry_delay = get_time("retry_delay")
        self.try_limit = max(get_int("try_limit"), 1)
        self.request_limit = get_int("request_limit")
        self.default_action = settings.get("default_action",
                                           cfg.get(_STRS["default_action"]))
        self.context = settings.get("policy_context", cfg.get(_STRS["policy_context"]))
        self.smtputf8 = cfg.bool("smtputf8_enable")
        self.stress = cfg.get("stress")
        self.idle: list[_Conn] = []
        self._reaper: asyncio.TimerHandle | None = None

    # -- the connection pool ------------------------------------------------------------

    async def _connect(self) -> _Conn:
        try:
            if self.kind == "inet":
                reader, writer = await asyncio.open_connection(self.host, self.port,
                                                               limit=MAX_LINE)
            else:
                reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE)
        except OSError as exc:  # inet_connect()/unix_connect()'s own warning
            log.warning("connect to %s: %s", self.endpoint,
                        os.strerror(exc.errno) if exc.errno else exc)
            raise
        return _Conn(reader, writer)

    def _take(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if (now - conn.used < self.max_idle and now - conn.opened < self.max_ttl
                    and not conn.reader.at_eof() and not conn.writer.is_closing()):
                return conn
            conn.close()
        return None

    def _give_back(self, conn: _Conn) -> None:
        conn.requests += 1
        conn.used = time.monotonic()
        if self.request_limit and conn.requests >= self.request_limit:
            conn.close()
            return
        self.idle.append(conn)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.max_idle, self._reap)

    def _reap(self) -> None:
        """Close what sat unused for max_idle (one timer per client, not per request)."""
        self._reaper = None
        now = time.monotonic()
        keep = []
        for conn in self.idle:
            if now - conn.used >= self.max_idle - 0.01 or now - conn.opened >= self.max_ttl:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep
        if keep:
            wait = max(min(c.used for c in keep) + self.max_idle - now, 0.05)
            self._reaper = asyncio.get_running_loop().call_later(wait, self._reap)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        while self.idle:
            self.idle.pop().close()

    # -- one request --------------------------------------------------------------------

    async def query(self, attrs: dict[str, str]) -> str | None:
        """The action the server answers, or None when it cannot be had in time."""
        request = encode_attributes(attrs)
        for count in itertools.count(1):
            conn: _Conn | None = None
            problem = ""
            try:
                async with asyncio.timeout(self.timeout):
                    conn = self._take() or await self._connect()
                    conn.writer.write(request)
                    await conn.writer.drain()
                    reply = await read_attributes(conn.reader, idle_timeout=self.timeout,
                                                  timeout=self.timeout, peer=self.endpoint)
                if reply is None:
                    problem = "Success"  # the server closed the connection: errno 0
                elif "action" not in reply:
                    log.warning("missing attribute action in input from %s", self.endpoint)
                    problem = "Application error"
                else:
                    self._give_back(conn)
                    return reply["action"]
            except TimeoutError:
                problem = "Connection timed out"
            except PolicyProtocolError as exc:
                log.warning("%s", exc)
                problem = "Application error"
            except OSError as exc:
                problem = (os.strerror(exc.errno) if exc.errno else str(exc)) or \
                    exc.__class__.__name__
            if conn is not None:
                conn.close()
            if count >= self.try_limit or problem not in (
                    "Success", "Application error", "Broken pipe", "Connection reset by peer",
                    "No such file or directory"):
                log.warning("problem talking to server %s: %s", self.endpoint, problem)
            if count >= self.try_limit:
                return None
            await asyncio.sleep(self.retry_delay)
        return None  # not reached

    async def check(self, policy: Policy, state: CheckState) -> str | None:
        action = await self.query(request_attributes(state, self.context, self.stress))
        if action is not None and self.smtputf8 and "\ufffd" in action:
            log.warning("%s: malformed UTF-8 in policy server reply", self.name)
            action = None
        if action is not None:
            return await table_result(policy, state, self.name, action, "policy query",
                                      state.reply_class)
        # a default action that itself fails over to a default gets the built-in one
        action = self.default_action if state.policy_nesting == 0 else DEFAULT_ACTION
        state.policy_nesting += 1
        try:
            return await table_result(policy, state, self.name, action, "policy query",
                                      state.reply_class)
        finally:
            state.policy_nesting -= 1


def request_attributes(state: CheckState, context: str, stress: str) -> dict[str, str]:
    """Postfix 3.7's request, attribute for attribute and in its order."""
    tls = state.tls
    trusted = tls is not None and tls.peer_trusted
    where = "DATA" if state.where == "BDAT" else state.where
    counted = where in ("DATA", "END-OF-MESSAGE")
    if state.in_mail and not state.memory.instance:
        now = time.time()
        state.memory.instance = (f"{os.getpid():x}.{int(now):x}."
                                 f"{int(now % 1 * 1e6):x}.{next(_instances):x}")
    return {
        "request": "smtpd_access_policy",
        "protocol_state": where,
        "protocol_name": state.protocol,
        "client_address": state.client_addr,
        "client_name": state.client_name,
        "client_port": state.client_port,
        "reverse_client_name": state.reverse_name or state.client_name,
        "server_address": state.server_addr,
        "server_port": state.server_port,
        "helo_name": state.helo,
        "sender": state.sender or "",
        "recipient": state.recipient,
        "recipient_count": str(state.rcpt_count if counted else 0),
        "queue_id": state.queue_id or _transaction_id(state),
        "instance": state.memory.instance,
        "size": str(state.size),
        "etrn_domain": state.etrn,
        "stress": stress,
        "sasl_method": state.sasl_method,
        "sasl_username": state.sasl_username,
        "sasl_sender": state.sasl_sender,
        "ccert_subject": xtext.encode(tls.peer_cn) if trusted and tls else "",
        "ccert_issuer": xtext.encode(tls.issuer_cn) if trusted and tls else "",
        "ccert_fingerprint": tls.fingerprint if tls else "",
        "ccert_pubkey_fingerprint": tls.pkey_fingerprint if tls else "",
        "encryption_protocol": tls.protocol if tls else "",
        "encryption_cipher": tls.cipher if tls else "",
        "encryption_keysize": str(tls.usebits if tls else 0),
        "policy_context": context,
    }


def _transaction_id(state: CheckState) -> str:
    """Postfix has a queue file, so a queue ID, from the first accepted recipient on."""
    if state.rcpt_count and state.where != "ETRN":
        if not state.memory.queue_id:
            state.memory.queue_id = new_queue_id(state.long_queue_ids)
        return state.memory.queue_id
    return ""


class PolicyClients:
    """The process's policy clients, one per server spec."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.clients: dict[str, PolicyClient] = {}

    def get(self, spec: str, param: str) -> PolicyClient:
        client = self.clients.get(spec)
        if client is None:
            client = self.clients[spec] = PolicyClient(spec, self.cfg, param)
        return client

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


@restriction("check_policy_service", arg="server")
async def check_policy_service(policy: Policy, state: CheckState, step: Step) -> str | None:
    client: PolicyClient = step.arg
    return await client.check(policy, state)
