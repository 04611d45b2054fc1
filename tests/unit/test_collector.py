"""The collector settled for a role's life, and as it was afterwards."""

from __future__ import annotations

import gc

from postbus import collector


def test_settled_freezes_startup_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    with collector.settled():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (collector.YOUNG_OBJECTS, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_settled_restores_when_the_role_fails() -> None:
    before = gc.get_threshold()
    try:
        with collector.settled():
            raise RuntimeError("the role stopped")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
