"""postmap and postalias work whether or not Redis runs, and the roles follow their builds.

Each test runs the real ``postbus postmap`` command against a real
redis-server that is down, comes up, goes away or loses its data, and looks
tables up in-process as a role does (``open_table(...).lookup``), in both
orders: postmap before the system starts, and postmap while it runs.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats as nats_client
import pytest
from nats.aio.msg import Msg

from postbus.bus.subjects import MAPS_CHANGED_SUBJECT
from postbus.maps import compiled, context, store
from postbus.maps.table import TableRetry, open_table
from postbus.servers import ServerProcess, redis_server

pytestmark = pytest.mark.integration

POSTBUS = [sys.executable, "-m", "postbus.cli.main"]


class Site:
    """A configuration directory whose Redis may be down, and a table directory."""

    def __init__(self, tmp_path: Path, redis: ServerProcess, nats_url: str = "") -> None:
        self.conf = tmp_path / "etc"
        self.dir = tmp_path / "tables"
        self.conf.mkdir(exist_ok=True)
        self.dir.mkdir(exist_ok=True)
        self.redis = redis
        (self.conf / "main.cf").write_text(
            f"postbus_redis_url = {redis.url}/0\nmyhostname = mail.example.test\n"
            + (f"postbus_nats_url = {nats_url}\n" if nats_url else "")
        )

    def write(self, name: str, text: str, mode: int = 0o644) -> Path:
        path = self.dir / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def run(self, *args: str, stdin: str = "", tool: str = "postmap") -> tuple[int, str, str]:
        proc = subprocess.run(
            [*POSTBUS, "-c", str(self.conf), tool, *args], input=stdin.encode(),
            capture_output=True, timeout=60, check=False,
        )
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    async def arun(self, *args: str, stdin: str = "", tool: str = "postmap"
                   ) -> tuple[int, str, str]:
        return await asyncio.to_thread(self.run, *args, stdin=stdin, tool=tool)


@pytest.fixture
def down_redis(tmp_path: Path) -> Iterator[ServerProcess]:
    """A redis-server on its own port that the test starts (and stops) when it likes."""
    server = redis_server(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
async def role(down_redis: ServerProcess) -> AsyncIterator[None]:
    """This process looks tables up as a role does, through that Redis."""
    context.configure(down_redis.url + "/0")
    yield
    await context.aclose()


def stamp_of(path: Path) -> str:
    with compiled.CompiledTable(str(path), "hash") as db:
        return db.stamp


ACCESS = "blocked@example.com REJECT first\nExample.NET OK\nspam.test 554 go away\n"


def test_postmap_with_redis_down_builds_queries_edits(tmp_path: Path,
                                                      down_redis: ServerProcess) -> None:
    site = Site(tmp_path, down_redis)
    src = site.write("access", ACCESS + "dup a\nDUP b\n")
    spec = f"hash:{src}"
    started = time.monotonic()
    assert site.run(spec) == (0, "", f'postmap: warning: {src}.db: duplicate entry: "dup"\n')
    assert time.monotonic() - started < 10
    assert compiled.is_ours(f"{src}.db")
    assert site.run("-q", "EXAMPLE.net", spec) == (0, "OK\n", "")
    assert site.run("-q", "nosuch", spec) == (1, "", "")
    assert site.run("-q", "-", spec, stdin="blocked@example.com\nnone\nspam.test\n") == (
        0, "blocked@example.com\tREJECT first\nspam.test\t554 go away\n", "")
    assert site.run("-d", "Example.NET", spec) == (0, "", "")
    assert site.run("-d", "example.net", spec) == (1, "", "")
    assert site.run("-i", spec, stdin="new@example.com OK\nspam.test other\n") == (
        0, "", f'postmap: warning: {src}.db: duplicate entry: "spam.test"\n')
    assert site.run("-s", spec) == (0, "blocked@example.com\tREJECT first\ndup\ta\n"
                                       "new@example.com\tOK\nspam.test\t554 go away\n", "")
    assert site.run("-q", "x", f"hash:{site.dir}/never") == (
        1, "", f"postmap: fatal: open database {site.dir}/never.db: No such file or directory\n")
    rc, _, err = site.run("-v", "-q", "new@example.com", spec)
    assert rc == 0 and f"{down_redis.url}/0: Error 111 connecting" in err


async def test_postmap_before_start_the_first_lookup_loads_it(
        tmp_path: Path, down_redis: ServerProcess, role: None) -> None:
    site = Site(tmp_path, down_redis)
    src = site.write("access", ACCESS)
    assert (await site.arun(f"hash:{src}"))[0] == 0
    table = open_table(f"hash:{src}")
    with pytest.raises(TableRetry, match="redis: Error 111"):
        await table.lookup("blocked@example.com")
    await asyncio.to_thread(down_redis.start)  # postbus start
    assert await table.lookup("Blocked@Example.com") == "REJECT first"
    assert await table.lookup("nosuch") is None
    r = context.redis_client()
    assert await store.table_stamp(r, f"hash:{src}") == stamp_of(Path(f"{src}.db"))
    assert await site.arun("-q", "spam.test", f"hash:{src}") == (0, "554 go away\n", "")


async def test_running_system_sees_a_rebuild_at_the_event(
        tmp_path: Path, down_redis: ServerProcess, nats: ServerProcess, role: None) -> None:
    await asyncio.to_thread(down_redis.start)
    site = Site(tmp_path, down_redis, nats.url)
    src = site.write("access", ACCESS)
    assert (await site.arun(f"hash:{src}"))[0] == 0
    role_nc = await nats_client.connect(nats.url)
    test_nc = await nats_client.connect(nats.url)
    try:
        context.get_context().nats_client = role_nc
        await context.watch_changes(role_nc)
        events: asyncio.Queue[str] = asyncio.Queue()

        async def seen(msg: Msg) -> None:
            await events.put(msg.data.decode())

        await test_nc.subscribe(MAPS_CHANGED_SUBJECT, cb=seen)
        await role_nc.flush()
        await test_nc.flush()
        table = open_table(f"hash:{src}")
        assert await table.lookup("blocked@example.com") == "REJECT first"  # now cached
        site.write("access", ACCESS.replace("first", "second"))
        assert await site.arun(f"hash:{src}") == (0, "", "")
        assert await asyncio.wait_for(events.get(), 10) == f"hash:{src}"
        deadline = time.monotonic() + 1.0
        while await table.lookup("blocked@example.com") != "REJECT second":
            assert time.monotonic() < deadline, "the rebuilt table is not seen within 1 s"
            await asyncio.sleep(0.01)
    finally:
        await role_nc.close()
        await test_nc.close()


async def test_without_the_bus_a_role_notices_the_rebuilt_file(
        tmp_path: Path, down_redis: ServerProcess, role: None) -> None:
    await asyncio.to_thread(down_redis.start)
    site = Site(tmp_path, down_redis)
    src = site.write("access", ACCESS)
    assert (await site.arun(f"hash:{src}"))[0] == 0
    table = open_table(f"hash:{src}")
    assert await table.lookup("blocked@example.com") == "REJECT first"
    site.write("access", ACCESS.replace("first", "second"))
    assert await site.arun(f"hash:{src}") == (0, "", "")  # no NATS runs: no word about it
    deadline = time.monotonic() + 10
    while await table.lookup("blocked@example.com") != "REJECT second":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_rebuilt_while_redis_was_down_is_loaded_when_it_is_back(
        tmp_path: Path, down_redis: ServerProcess, role: None) -> None:
    await asyncio.to_thread(down_redis.start)
    site = Site(tmp_path, down_redis)
    src = site.write("access", ACCESS)
    assert (await site.arun(f"hash:{src}"))[0] == 0
    table = open_table(f"hash:{src}")
    assert await table.lookup("blocked@example.com") == "REJECT first"
    await asyncio.to_thread(down_redis.stop)
    site.write("access", ACCESS.replace("first", "second"))
    assert await site.arun(f"hash:{src}") == (0, "", "")
    assert await site.arun("-q", "blocked@example.com", f"hash:{src}") == (
        0, "REJECT second\n", "")
    await asyncio.to_thread(down_redis.start)  # its append-only file still has "first"
    await context.aclose()
    deadline = time.monotonic() + 10
    while (value := await table.lookup("blocked@example.com")) != "REJECT second":
        assert time.monotonic() < deadline, value
        await asyncio.sleep(0.05)


async def test_redis_that_lost_the_table_gets_it_again(
        tmp_path: Path, down_redis: ServerProcess, role: None) -> None:
    await asyncio.to_thread(down_redis.start)
    site = Site(tmp_path, down_redis)
    src = site.write("access", ACCESS)
    assert (await site.arun(f"hash:{src}"))[0] == 0
    table = open_table(f"hash:{src}")
    assert await table.lookup("spam.test") == "554 go away"
    await context.redis_client().flushall()
    context.get_context().cache.clear()
    assert await table.lookup("spam.test") == "554 go away"
    assert await store.is_loaded(context.redis_client(), f"hash:{src}")


async def test_newer_copy_in_redis_wins_until_the_next_build(
        tmp_path: Path, down_redis: ServerProcess, role: None) -> None:
    await asyncio.to_thread(down_redis.start)
    site = Site(tmp_path, down_redis)
    src = site.write("access", ACCESS)
    assert (await site.arun(f"hash:{src}"))[0] == 0
    r = context.redis_client()
    await store.replace_table(r, f"hash:{src}", [("pushed.test", "OK pushed")])  # maps-api PUT
    table = open_table(f"hash:{src}")
    assert await table.lookup("pushed.test") == "OK pushed"  # the older file is not loaded
    assert await site.arun("-q", "pushed.test", f"hash:{src}") == (0, "OK pushed\n", "")
    assert await site.arun("-s", f"hash:{src}") == (0, "pushed.test\tOK pushed\n", "")
    assert await site.arun(f"hash:{src}") == (0, "", "")
    assert await site.arun("-q", "pushed.test", f"hash:{src}") == (1, "", "")
    context.get_context().cache.clear()
    assert await table.lookup("spam.test") == "554 go away"


async def test_without_the_file_postmap_works_on_redis_alone(
        tmp_path: Path, down_redis: ServerProcess) -> None:
    """As in a container whose disk lacks the compiled file, next to the cluster's Redis."""
    await asyncio.to_thread(down_redis.start)
    site = Site(tmp_path, down_redis)
    src = site.write("access", ACCESS)
    assert (await site.arun(f"hash:{src}"))[0] == 0
    os.unlink(f"{src}.db")
    spec = f"hash:{src}"
    assert await site.arun("-q", "example.net", spec) == (0, "OK\n", "")
    assert await site.arun("-d", "example.net", spec) == (0, "", "")
    assert await site.arun("-i", spec, stdin="more.test OK\n") == (0, "", "")
    rc, out, err = await site.arun("-s", spec)
    assert (rc, sorted(out.splitlines()), err) == (
        0, ["blocked@example.com\tREJECT first", "more.test\tOK", "spam.test\t554 go away"], "")
    assert not os.path.exists(f"{src}.db")


@pytest.mark.parametrize("redis_up", [False, True])
async def test_incremental_edits_keep_both_copies_equal(
        tmp_path: Path, down_redis: ServerProcess, role: None, redis_up: bool) -> None:
    if redis_up:
        await asyncio.to_thread(down_redis.start)
    site = Site(tmp_path, down_redis)
    spec = f"hash:{site.dir}/fresh"
    assert await site.arun("-i", spec, stdin="a 1\nb 2\n") == (0, "", "")
    assert await site.arun("-d", "a", spec) == (0, "", "")
    assert await site.arun("-i", "-r", spec, stdin="b 3\nc 4\n") == (0, "", "")
    if not redis_up:
        await asyncio.to_thread(down_redis.start)
    table = open_table(spec)
    assert [await table.lookup(k) for k in "abc"] == [None, "3", "4"]
    r = context.redis_client()
    assert sorted([kv async for kv in store.dump_table(r, f"hash:{site.dir}/fresh")]) == [
        ("b", "3"), ("c", "4")]
    assert await store.table_stamp(r, f"hash:{site.dir}/fresh") == stamp_of(
        site.dir / "fresh.db")


def postfix_database(path: Path) -> bytes:
    """A Postfix Berkeley DB file (real postmap when installed, else its first bytes)."""
    real = shutil.which("postmap", path="/usr/sbin:" + os.environ["PATH"])
    if real:
        conf = path.parent / "pf-conf"
        conf.mkdir()
        (conf / "main.cf").write_text("compatibility_level = 3.6\n")
        source = path.with_suffix("")
        source.write_text("k v\n")
        subprocess.run([real, f"hash:{source}"], check=True, timeout=60,
                       env={**os.environ, "MAIL_CONFIG": str(conf)})
    else:
        path.write_bytes(bytes.fromhex("000000000100000000000000619715000900000000100000")
                         + b"\0" * 4072)
    return path.read_bytes()


async def test_never_overwrites_nor_reads_a_postfix_database(
        tmp_path: Path, down_redis: ServerProcess, role: None,
        caplog: pytest.LogCaptureFixture) -> None:
    site = Site(tmp_path, down_redis)
    before = postfix_database(site.dir / "access.db")
    src = site.write("access", ACCESS)
    why = f"open database {src}.db: not a Postbus table (a Postfix database?)"
    assert await site.arun(f"hash:{src}") == (1, "", f"postmap: fatal: {why}\n")
    assert await site.arun("-q", "spam.test", f"hash:{src}") == (1, "", f"postmap: fatal: {why}\n")
    assert (site.dir / "access.db").read_bytes() == before
    assert not list(site.dir.glob("*.tmp"))
    await asyncio.to_thread(down_redis.start)
    with pytest.raises(TableRetry, match="No such file or directory"):
        await open_table(f"hash:{src}").lookup("spam.test")
    assert f"hash:{src}: ignoring {src}.db: not a Postbus table" in caplog.text


def test_file_modes_and_owner_as_postfix_makes_them(
        tmp_path: Path, down_redis: ServerProcess, request: pytest.FixtureRequest) -> None:
    site = Site(tmp_path, down_redis)
    secret = site.write("sasl_passwd", "[mx.example.com]:587 user:pw\n", mode=0o640)
    assert site.run(f"hash:{secret}")[0] == 0
    assert os.stat(f"{secret}.db").st_mode & 0o777 == 0o640  # the source's missing bits
    os.chmod(f"{secret}.db", 0o600)
    assert site.run(f"hash:{secret}")[0] == 0
    assert os.stat(f"{secret}.db").st_mode & 0o777 == 0o600  # a rebuild keeps the file's mode
    plain = site.write("plain", "a b\n", mode=0o600)
    assert site.run("-p", f"hash:{plain}")[0] == 0
    assert os.stat(f"{plain}.db").st_mode & 0o777 == 0o644  # -p: 0644
    if os.getuid() != 0:
        assert os.stat(f"{plain}.db").st_uid == os.getuid()
        return
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrgid(65534).gr_gid
    shared = Path(tempfile.mkdtemp(prefix="postmap-owner-"))  # nobody can reach it (not tmp_path)
    request.addfinalizer(lambda: shutil.rmtree(shared))
    shared.chmod(0o755)
    os.chown(shared, nobody, nogroup)
    theirs = shared / "virtual"
    theirs.write_text("a b\n")
    os.chown(theirs, nobody, nogroup)
    assert site.run(f"hash:{theirs}")[0] == 0  # root works as the source file's owner
    st = os.stat(f"{theirs}.db")
    assert (st.st_uid, st.st_gid) == (nobody, nogroup)
    os.chown(shared, 0, 0)
    assert site.run(f"hash:{theirs}") == (
        1, "", f"postmap: fatal: open database {theirs}.db: Permission denied\n")
    os.unlink(f"{theirs}.db")
    assert site.run("-o", f"hash:{theirs}")[0] == 0  # -o: stays root
    assert os.stat(f"{theirs}.db").st_uid == 0


async def test_postalias_with_redis_down_then_up(
        tmp_path: Path, down_redis: ServerProcess, role: None) -> None:
    site = Site(tmp_path, down_redis)
    aliases = site.write("aliases", "postmaster: root\nRoot: joe, bob\n")
    assert await site.arun(f"hash:{aliases}", tool="postalias") == (0, "", "")
    assert await site.arun("-q", "ROOT", f"hash:{aliases}", tool="postalias") == (
        0, "joe, bob\n", "")
    assert await site.arun("-q", "-", f"hash:{aliases}", tool="postalias",
                           stdin="postmaster\nnobody\n") == (0, "postmaster:\troot\n", "")
    await asyncio.to_thread(down_redis.start)
    assert await open_table(f"hash:{aliases}").lookup("root") == "joe, bob"
    assert await site.arun("-d", "postmaster", f"hash:{aliases}", tool="postalias") == (
        0, "", "")
    context.get_context().cache.clear()
    assert await open_table(f"hash:{aliases}").lookup("postmaster") is None
