"""Time buckets: done marks written in groups, a bucket purged whole once every
message in it is marked, deferred mail moved out (postbus.queue.buckets,
QueueFile.remove, update and move_out), against a real nats-server."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js.errors import APIError

from postbus.bus import subjects as s
from postbus.bus.group_commit import GroupCommit
from postbus.queue.admin import Bus
from postbus.queue.buckets import Sweeper
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.file import ENTRY_HEADER, GONE_HEADER, QueueConflict
from postbus.queue.upgrade import move_old_layout

BODY = b"Subject: t\r\n\r\n" + b"x" * 5000 + b"\r\n"


def entry(queue: str = "incoming") -> QueueEntry:
    return QueueEntry("", "a@client.test", [Recipient("b@remote.test")], queue=queue)


async def subjects(store: Bus, subject_filter: str) -> dict[str, int]:
    info = await store.js.stream_info(s.QUEUE_STREAM, subjects_filter=subject_filter)
    return info.state.subjects or {}


def sweeper(store: Bus) -> Sweeper:
    return Sweeper(store.js, store.queue.requests)


async def read(store: Bus, queue_id: str) -> tuple[QueueEntry, int]:
    got = await store.queue.get(queue_id)
    assert got is not None
    return got


async def bucket_of(store: Bus, queue_id: str) -> str:
    return (await read(store, queue_id))[0].bucket


async def queued(store: Bus) -> tuple[str, QueueEntry, int]:
    """A new message: its queue ID, entry and revision."""
    qid = await store.queue.enqueue(entry(), BODY)
    return (qid, *await read(store, qid))


async def test_a_removed_message_is_marked_then_goes_with_its_bucket(store: Bus) -> None:
    queue = store.queue
    ids = [await queue.enqueue(entry(), BODY) for _ in range(30)]
    buckets = {q: await bucket_of(store, q) for q in ids}  # one, or two at a boundary
    assert all(s.bucket_number(b) >= 0 for b in buckets.values())
    # removed together: the marks share atomic batches, and each reads as gone at once
    assert await asyncio.gather(*(queue.remove(q, bucket=buckets[q]) for q in ids)) == [1] * 30
    assert [await queue.get(q) for q in ids] == [None] * 30
    on_disk = [await subjects(store, s.bucket_filter(b)) for b in set(buckets.values())]
    assert sum(len(found) for found in on_disk) == 60  # content and mark: not purged yet
    # a bucket is closed once its seconds are past; then one purge takes it all
    sweep = sweeper(store)
    newest = max(s.bucket_number(b) for b in buckets.values())
    await sweep.sweep(now=(newest + 1) * s.BUCKET_SECONDS + 0.5)
    for bucket in set(buckets.values()):
        assert await subjects(store, s.bucket_filter(bucket)) == {}
    assert sweep.known == {}


async def test_a_bucket_keeps_the_mail_still_in_flight(store: Bus) -> None:
    """The purge stops below the first subject of a message not marked yet, so a
    large message in flight keeps its parts; once it is marked, it goes too."""
    queue = store.queue
    queue.chunk_size = 2048  # three chunks
    for _ in range(3):  # three in one bucket (they may straddle a bucket's end: again)
        first, in_flight, last = [await queue.enqueue(entry(), BODY) for _ in range(3)]
        bucket = await bucket_of(store, in_flight)
        if {await bucket_of(store, first), await bucket_of(store, last)} == {bucket}:
            break
    await queue.remove(first, bucket=bucket)
    await queue.remove(last, bucket=bucket)
    sweep = sweeper(store)
    assert not await sweep.sweep_bucket(bucket)
    assert await queue.content(in_flight, 3) == BODY
    # below it: gone, but for the mark written after it (a mark of nothing: harmless)
    left = await subjects(store, f"{s.ROOT}.q.{bucket}.{first}.>")
    assert list(left) == [s.entry_subject(first, bucket)]
    assert await queue.get(first) is None
    assert await queue.get(last) is None
    await queue.remove(in_flight, bucket=bucket)
    assert await sweep.sweep_bucket(bucket)
    assert await subjects(store, s.bucket_filter(bucket)) == {}


async def test_deferred_mail_moves_to_the_long_bucket_whole(store: Bus) -> None:
    queue = store.queue
    qid, deferred, revision = await queued(store)
    old = deferred.bucket
    deferred.queue, deferred.next_attempt = "deferred", time.time() + 3600
    new_revision = await queue.update(deferred, revision)
    assert deferred.bucket == s.LONG_BUCKET
    moved = await read(store, qid)
    assert (moved[0].bucket, moved[0].queue, moved[1]) == (s.LONG_BUCKET, "deferred",
                                                          new_revision)
    # the time bucket no longer waits for it, and the message outlives its purge
    assert await sweeper(store).sweep_bucket(old)
    assert await subjects(store, s.bucket_filter(old)) == {}
    assert await queue.content(qid) == BODY
    assert (await queue.get(qid)) == moved
    # an entry written in the long bucket is changed there, by compare-and-set
    moved[0].queue = "hold"
    assert await queue.update(moved[0], moved[1]) > moved[1]
    with pytest.raises(QueueConflict):
        await queue.update(moved[0], moved[1])
    # removing it there is a purge of its own subjects
    assert await queue.remove(qid, bucket=s.LONG_BUCKET) == 2  # content and entry
    assert await queue.get(qid) is None


async def test_a_move_that_lost_the_race_leaves_the_message_where_it_was(store: Bus) -> None:
    queue = store.queue
    qid, first, revision = await queued(store)
    bucket = first.bucket
    other = await read(store, qid)
    other[0].attempts = 5
    await queue.update(*other)  # someone else was faster
    first.queue = "deferred"
    with pytest.raises(QueueConflict):
        await queue.update(first, revision)
    now = await read(store, qid)
    assert (now[0].queue, now[0].bucket, now[0].attempts) == ("incoming", bucket, 5)
    # no entry in the long bucket (a copy of the content may stay there: the next move
    # overwrites it, and a winner's copy is never removed by a loser)
    assert s.entry_subject(qid, s.LONG_BUCKET) not in await subjects(
        store, s.bucket_filter(s.LONG_BUCKET))
    # held, it moves out too: no time bucket waits for an administrator
    now[0].queue = "hold"
    await queue.update(*now)
    held = await read(store, qid)
    assert (held[0].queue, held[0].bucket) == ("hold", s.LONG_BUCKET)


async def test_an_id_in_use_in_another_bucket_is_not_given_again(store: Bus) -> None:
    queue = store.queue
    qid, deferred, revision = await queued(store)
    old = deferred.bucket
    deferred.queue = "deferred"
    await queue.update(deferred, revision)
    assert await sweeper(store).sweep_bucket(old)  # only d.0 holds it now
    again = await queue.enqueue(entry(), BODY, queue_id=qid)
    assert again != qid


async def test_discovery_finds_buckets_no_trigger_named(store: Bus) -> None:
    for bucket in ("t.5", "t.9", "t.7"):
        await store.js.publish(s.msg_subject(f"ABC{bucket[2]}DEF000", bucket), b"x",
                               stream=s.QUEUE_STREAM)
    sweep = sweeper(store)
    await sweep.discover()
    assert sorted(sweep.known) == [5, 7, 9]


async def test_marks_fail_together_when_the_batch_fails(store: Bus) -> None:
    """A batch that JetStream refuses tells every writer in it: none is told stored."""
    queue = store.queue
    await store.js.update_stream(
        (await store.js.stream_info(s.QUEUE_STREAM)).config.evolve(allow_atomic=False))
    ids = [await queue.enqueue(entry(), BODY) for _ in range(3)]
    bucket = s.time_bucket(time.time())
    results = await asyncio.gather(*(queue.remove(q, bucket=bucket) for q in ids),
                                   return_exceptions=True)
    assert all(isinstance(r, APIError) for r in results), results


async def test_queue_files_of_an_older_release_are_moved_into_buckets(store: Bus) -> None:
    """Nothing queued before an upgrade is lost: the old layout (postbus.q.<qid>.>) is
    copied into buckets at the qmgr's start, then removed."""
    js, queue = store.js, store.queue
    received = QueueEntry("OLDRCVD0001", "a@client.test", [Recipient("b@remote.test")],
                          chunks=2)
    await js.publish(f"{s.ROOT}.q.OLDRCVD0001.part.1", b"second half", stream=s.QUEUE_STREAM)
    await js.publish(f"{s.ROOT}.q.OLDRCVD0001.msg", b"first half, ", stream=s.QUEUE_STREAM,
                     headers={ENTRY_HEADER: received.encode().decode()})
    deferred = QueueEntry("OLDDEFR0001", "a@client.test", [Recipient("c@remote.test")],
                          queue="deferred", next_attempt=time.time() + 3600)
    await js.publish(f"{s.ROOT}.q.OLDDEFR0001.msg", BODY, stream=s.QUEUE_STREAM,
                     headers={ENTRY_HEADER: received.encode().decode()})
    await js.publish(f"{s.ROOT}.q.OLDDEFR0001.entry", deferred.encode(), stream=s.QUEUE_STREAM)

    assert await move_old_layout(queue) == 2
    assert await move_old_layout(queue) == 0
    got = await queue.get("OLDRCVD0001")
    assert got is not None
    assert (got[0].queue, got[1], s.bucket_number(got[0].bucket) >= 0) == ("incoming", 0, True)
    assert await queue.content("OLDRCVD0001", 2) == b"first half, second half"
    got = await queue.get("OLDDEFR0001")
    assert got is not None
    assert (got[0].queue, got[0].bucket) == ("deferred", s.LONG_BUCKET)
    assert await queue.content("OLDDEFR0001") == BODY
    assert await subjects(store, s.timer_subject("OLDDEFR0001", s.LONG_BUCKET))
    assert await subjects(store, f"{s.ROOT}.q.*.msg") == {}
    assert await subjects(store, f"{s.ROOT}.q.*.part.*") == {}


async def test_without_a_window_a_group_is_what_came_while_the_last_was_written(
    store: Bus,
) -> None:
    """A tool that removes many messages at once (postsuper) does not wait for company:
    its marks still share batches, the ones that arrived while a batch was written."""
    commit = GroupCommit(store.queue.requests, s.QUEUE_STREAM, window=0)
    subjects_written = [s.entry_subject(f"GRP{i:08d}", "t.3") for i in range(200)]
    started = time.monotonic()
    await asyncio.gather(*(commit.write(subject, b"", {GONE_HEADER: "done"})
                           for subject in subjects_written))
    assert time.monotonic() - started < 5
    assert len(await subjects(store, "postbus.q.t.3.*.entry")) == 200
    batches = next(commit._names)
    assert batches < 20, batches  # 200 marks, at most 48 a batch: a handful


async def test_a_failed_compare_and_set_fails_only_its_own_writer(store: Bus) -> None:
    """Moves ride in the marks' batches; one whose compare-and-set fails sinks the
    batch, which is then stored writer by writer: only that one hears of it."""
    commit = GroupCommit(store.queue.requests, s.QUEUE_STREAM, window=0.2)
    done = {GONE_HEADER: "done"}
    results = await asyncio.gather(
        commit.write(s.entry_subject("CASA0000001", "t.4"), b"", done),
        commit.write_all([
            (s.entry_subject("CASB0000001", s.LONG_BUCKET), b"{}",
             {"Nats-Expected-Last-Subject-Sequence": "0"}),
            (s.entry_subject("CASB0000001", "t.4"), b"",
             {GONE_HEADER: "moved", "Nats-Expected-Last-Subject-Sequence": "999"}),
        ]),
        commit.write(s.entry_subject("CASC0000001", "t.4"), b"", done),
        return_exceptions=True)
    assert isinstance(results[1], APIError)
    assert isinstance(results[0], int) and isinstance(results[2], int)
    stored = await subjects(store, f"{s.ROOT}.q.*.*.*.entry")
    assert sorted(stored) == [s.entry_subject("CASA0000001", "t.4"),
                              s.entry_subject("CASC0000001", "t.4")]  # nothing of B
    assert next(commit._names) == 4  # the batch of three, then each on its own


async def test_a_read_in_the_named_bucket_finds_what_the_search_finds(store: Bus) -> None:
    """QueueFile.get(qid, bucket), as a trigger or a job names the bucket: exact
    subjects while the bucket holds the message, the search over every bucket once
    it holds nothing of it, the same answer as get(qid) either way."""
    queue = store.queue
    asked: list[str] = []
    search = queue.requests.last_matching

    async def recorded(stream: str, subject: str, timeout: float = 5.0):  # type: ignore[no-untyped-def]
        asked.append(subject)
        return await search(stream, subject, timeout)

    queue.requests.last_matching = recorded  # type: ignore[method-assign]

    async def both(qid: str, bucket: str) -> tuple[object, list[str]]:
        asked.clear()
        named = await queue.get(qid, bucket)
        looked = list(asked)
        assert named == await queue.get(qid)
        return named, looked

    qid, received, _ = await queued(store)
    bucket = received.bucket
    got, looked = await both(qid, bucket)  # as received: no entry of its own yet
    assert got == (received, 0) and not any("*" in subject for subject in looked)
    received.queue = "active"
    revision = await queue.update(received, 0)  # written in its time bucket
    got, looked = await both(qid, bucket)
    assert got == (received, revision) and looked == [s.entry_subject(qid, bucket)]
    received.queue, received.next_attempt = "deferred", time.time() + 3600
    await queue.update(received, revision)  # moved: followed from the mark
    got, looked = await both(qid, bucket)
    assert got is not None and got[0].bucket == s.LONG_BUCKET
    assert not any("*" in subject for subject in looked)
    assert await sweeper(store).sweep_bucket(bucket)  # the bucket holds nothing of it now
    got, looked = await both(qid, bucket)
    assert got is not None and got[0].bucket == s.LONG_BUCKET
    assert any("*" in subject for subject in looked)  # found by the search
    done, done_entry, _ = await queued(store)
    await queue.remove(done, bucket=done_entry.bucket)
    got, looked = await both(done, done_entry.bucket)  # marked done: gone at once
    assert got is None and looked == [s.entry_subject(done, done_entry.bucket)]
