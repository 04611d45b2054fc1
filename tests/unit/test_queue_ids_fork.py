"""Queue IDs drawn in a forked child do not repeat its parent's."""

from __future__ import annotations

import os

from postbus.queue.ids import short_queue_id


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next IDs, to the parent
        os.write(write, " ".join(short_queue_id(1.5)[5:] for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode().split()
    os.waitpid(pid, 0)
    os.close(read)
    parent = [short_queue_id(1.5)[5:] for _ in range(8)]
    assert len(child) == 8 and child != parent
