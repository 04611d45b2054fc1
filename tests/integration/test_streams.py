"""ensure_streams against real nats-servers: what it reconciles in place, what it
makes anew, what it refuses (with one clear line), and R3 on a three-node cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import PersistMode, RetentionPolicy, StorageType, StreamConfig

from postbus.bus import subjects as s
from postbus.bus.jetstream import StreamMismatch, connect, ensure_streams
from postbus.queue import gauges
from postbus.servers import ServerProcess, find_binary, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats: ServerProcess) -> AsyncIterator[NATS]:
    client = await connect(nats.url, "test")
    yield client
    await client.close()


async def test_settings_of_an_existing_stream_are_brought_to_this_release(nc: NATS) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(  # as an older release made it
        name=s.QUEUE_STREAM, subjects=[s.QUEUE_SUBJECTS], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, max_age=3600, max_msgs_per_subject=5,
    ))
    await js.publish(s.msg_subject("ABCDEF12345", "t.1"), b"kept", stream=s.QUEUE_STREAM)
    await ensure_streams(js)
    config = (await js.stream_info(s.QUEUE_STREAM)).config
    assert sorted(config.subjects or []) == sorted([s.QUEUE_SUBJECTS, s.WAKE_SUBJECTS])
    assert (config.max_age, config.max_msgs_per_subject) == (0, 1)
    assert config.allow_msg_schedules and config.allow_direct
    msg = await js.get_last_msg(s.QUEUE_STREAM, s.msg_subject("ABCDEF12345", "t.1"))
    assert msg.data == b"kept"  # updated in place, nothing lost


async def test_a_queue_stream_of_the_wrong_storage_is_refused_with_one_line(nc: NATS) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(
        name=s.QUEUE_STREAM, subjects=[s.QUEUE_SUBJECTS], storage=StorageType.MEMORY))
    with pytest.raises(StreamMismatch) as refused:
        await ensure_streams(js)
    assert str(refused.value) == (
        "stream POSTBUS_QUEUE exists with storage memory and retention limits; this release "
        "needs file and limits: drain the queue and remove the stream "
        "(nats stream rm POSTBUS_QUEUE) before starting")


async def test_streams_that_hold_no_mail_are_made_anew(nc: NATS) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=s.WORK_STREAM, subjects=[s.DELIVER_SUBJECTS],
                                     storage=StorageType.FILE))
    await js.add_stream(StreamConfig(name=s.GAUGES_STREAM, subjects=[s.GAUGE_SUBJECTS],
                                     storage=StorageType.MEMORY))
    await ensure_streams(js)
    work = (await js.stream_info(s.WORK_STREAM)).config
    assert (work.storage, work.retention) == (StorageType.MEMORY, RetentionPolicy.WORK_QUEUE)
    counters = (await js.stream_info(s.GAUGES_STREAM)).config
    assert counters.allow_msg_counter and counters.duplicate_window == gauges.CLAIM_WINDOW
    await gauges.move(js, None, "hold")
    assert await gauges.counter(js, "hold") == 1


async def test_events_are_acknowledged_before_fsync_and_mail_is_not(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    assert (await js.stream_info(s.EVENTS_STREAM)).config.persist_mode == PersistMode.ASYNC
    for name in (s.QUEUE_STREAM, s.CORRUPT_STREAM):
        assert (await js.stream_info(name)).config.persist_mode in (None, PersistMode.DEFAULT)


async def test_an_events_stream_of_an_older_release_keeps_its_events(nc: NATS) -> None:
    """JetStream cannot change the persist mode in place: the stream stays as it
    is (fsynced) rather than being made anew without what it holds."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=s.EVENTS_STREAM, subjects=[s.EVENT_SUBJECTS],
                                     storage=StorageType.FILE))
    await js.publish(s.event_subject("received"), b"kept", stream=s.EVENTS_STREAM)
    await ensure_streams(js)
    info = await js.stream_info(s.EVENTS_STREAM)
    assert info.config.persist_mode in (None, PersistMode.DEFAULT)
    assert info.state.messages == 1


async def test_three_replicas_on_one_server_are_refused_naming_the_parameter(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    with pytest.raises(StreamMismatch) as refused:
        await ensure_streams(js, 3)
    assert refused.value.parameter == "postbus_stream_replicas"
    assert str(refused.value).startswith(
        "parameter postbus_stream_replicas: stream POSTBUS_QUEUE cannot be given this "
        "release's settings (num_replicas): JetStream says: ")


# -- a three-node JetStream cluster ---------------------------------------------------


def cluster(tmp_path: Path, size: int = 3) -> list[ServerProcess]:
    ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
    routes = ", ".join(f"nats://127.0.0.1:{route}" for _, route, _ in ports)
    servers = []
    for index, (client, route, monitor) in enumerate(ports):
        run = tmp_path / f"n{index}"
        conf = (
            f"server_name: n{index}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n"
            f'jetstream {{\n  store_dir: "{run / "js"}"\n  sync_interval: always\n}}\n'
            f"cluster {{\n  name: postbus\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n"
        )
        servers.append(ServerProcess(
            "nats", [find_binary("nats-server"), "-c", str(run / "nats-server.conf")],
            "127.0.0.1", client, run, run / "nats-server.log", files={"nats-server.conf": conf},
        ))
    return servers


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = cluster(tmp_path)
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_r1_streams_become_r3_on_a_three_node_cluster(
    three_nodes: list[ServerProcess],
) -> None:
    client = await connect(three_nodes[0].url, "test")
    try:
        js = client.jetstream()
        for _ in range(100):  # the cluster elects its JetStream meta leader
            try:
                await ensure_streams(js, 1)
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert (await js.stream_info(s.QUEUE_STREAM)).config.num_replicas == 1
        await js.publish(s.msg_subject("ABCDEF12345", "t.1"), b"kept", stream=s.QUEUE_STREAM)
        await ensure_streams(js, 3)
        for name in (s.QUEUE_STREAM, s.WORK_STREAM, s.EVENTS_STREAM, s.CORRUPT_STREAM,
                     s.GAUGES_STREAM):
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
        # async persistence is for one replica only: the events stream was made anew
        events_config = (await js.stream_info(s.EVENTS_STREAM)).config
        assert events_config.persist_mode in (None, PersistMode.DEFAULT)
        for _ in range(100):  # the two new peers join the stream's group
            cluster_info = (await js.stream_info(s.QUEUE_STREAM)).cluster
            if cluster_info is not None and len(cluster_info.replicas or []) == 2:
                break
            await asyncio.sleep(0.1)
        assert cluster_info is not None and len(cluster_info.replicas or []) == 2
        msg = await js.get_last_msg(s.QUEUE_STREAM, s.msg_subject("ABCDEF12345", "t.1"))
        assert msg.data == b"kept"
    finally:
        await client.close()
