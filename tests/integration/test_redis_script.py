"""Scripts over the pipelined connection of postbus.redis_script, against a real
redis-server: answers in order, the database and password of the URL, NOSCRIPT,
Redis restarted or gone, and a Redis that does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from postbus.redis_script import ScriptConnection, forget, run_script
from postbus.servers import ServerProcess, free_port

pytestmark = pytest.mark.integration

ECHO = "redis.call('SET', KEYS[1], ARGV[1]); return {ARGV[1], tonumber(ARGV[2]) * 2}"


async def test_many_callers_get_their_own_answers_in_the_urls_database(
        redis: ServerProcess) -> None:
    client = Redis.from_url(f"{redis.url}/3")
    try:
        got = await asyncio.gather(*(
            run_script(client, ECHO, [f"k{i}"], [f"v{i}", i]) for i in range(500)))
        assert got == [[f"v{i}".encode(), 2 * i] for i in range(500)]
        assert await client.get("k499") == b"v499"  # redis-py reads db 3 too
        plain = Redis.from_url(f"{redis.url}/0")
        assert await plain.get("k499") is None
        await plain.aclose()
        with pytest.raises(ResponseError, match="oops"):
            await run_script(client, "return redis.error_reply('oops')", [], [])
        assert await run_script(client, ECHO, ["k"], ["after", 0.5]) == [b"after", 1]
    finally:
        forget(client)
        await client.aclose()


async def test_a_flushed_script_is_loaded_again_and_a_password_is_given(
        redis: ServerProcess) -> None:
    admin = Redis.from_url(redis.url)
    await admin.config_set("requirepass", "s3cret")
    client = Redis.from_url(f"redis://:s3cret@127.0.0.1:{redis.port}/2")
    try:
        assert await run_script(client, ECHO, ["a"], ["1", 1]) == [b"1", 2]
        await client.script_flush()
        assert await run_script(client, ECHO, ["a"], ["2", 2]) == [b"2", 4]
        wrong = Redis.from_url(f"redis://:wrong@127.0.0.1:{redis.port}/2")
        with pytest.raises(RedisConnectionError, match="Redis refused the connection"):
            await run_script(wrong, ECHO, ["a"], ["3", 3])
        forget(wrong)
        await wrong.aclose()
    finally:
        await client.config_set("requirepass", "")
        forget(client)
        await client.aclose()
        await admin.aclose()


async def test_redis_restarted_or_gone_is_an_error_then_a_new_connection(
        redis: ServerProcess) -> None:
    client = Redis.from_url(redis.url)
    try:
        assert await run_script(client, ECHO, ["a"], ["1", 1]) == [b"1", 2]
        redis.stop()
        with pytest.raises(RedisConnectionError):
            await run_script(client, ECHO, ["a"], ["2", 1])
        redis.start()
        answer = None
        deadline = time.monotonic() + 10
        # the first call may still meet the old connection, and a Redis that loads its
        # append-only file answers LOADING (BusyLoadingError) for a moment
        while answer is None and time.monotonic() < deadline:
            with contextlib.suppress(RedisConnectionError):
                answer = await run_script(client, ECHO, ["a"], ["3", 1])
        assert answer == [b"3", 2]
    finally:
        forget(client)
        await client.aclose()


async def test_a_redis_that_does_not_answer_times_out_every_caller() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the commands, answers none
        writer.close()

    port = free_port()
    server = await asyncio.start_server(silent, "127.0.0.1", port)
    try:
        conn = ScriptConnection({"host": "127.0.0.1", "port": port, "socket_timeout": 0.5})
        calls = [asyncio.ensure_future(conn.call("PING")) for _ in range(3)]
        done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        assert [type(x) for x in done] == [RedisTimeoutError] * 3
        conn.close()
    finally:
        server.close()
        await server.wait_closed()


def test_a_redis_still_loading_is_not_there_yet() -> None:
    from postbus.redis_script import _error

    assert isinstance(_error("LOADING Redis is loading the dataset in memory"),
                      RedisConnectionError)  # the callers' "try again"
    assert not isinstance(_error("ERR wrong number of arguments"), RedisConnectionError)
