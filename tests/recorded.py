"""Postfix's answers, live where Postfix is installed and recorded everywhere.

A comparison with real Postfix never just skips. Each differential test
asks a :class:`Recording` for Postfix's answer to a case: where Postfix
is installed the answer is computed live and must equal the recorded one
(so the recordings stay true); where it is not, the recorded answer is
used. ``POSTBUS_RECORD_POSTFIX=1`` rewrites the recordings from the live
answers (run it where Postfix is installed, then review the diff).

Recordings live in ``tests/data/postfix/<name>.json`` as
``{case: answer}`` with JSON answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data" / "postfix"
RECORD = os.environ.get("POSTBUS_RECORD_POSTFIX") == "1"


class Recording:
    def __init__(self, name: str) -> None:
        self.path = DATA / f"{name}.json"
        self.answers: dict[str, Any] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )

    def answer(self, case: str, live: Callable[[], Any] | None) -> Any:
        """Postfix's answer to ``case``: ``live()`` when given, checked against the recording."""
        if live is None:
            if case not in self.answers:
                pytest.fail(f"no recorded Postfix answer for {case!r} in {self.path}; "
                            "record it where Postfix is installed (POSTBUS_RECORD_POSTFIX=1)")
            return self.answers[case]
        value = json.loads(json.dumps(live()))  # the same shape a recording has
        if RECORD:
            self.answers[case] = value
            DATA.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.answers, indent=1, ensure_ascii=True,
                                            sort_keys=True) + "\n")
        elif self.answers.get(case) != value:
            pytest.fail(f"live Postfix answers {case!r} differently from {self.path}: "
                        f"{value!r} != {self.answers.get(case)!r}; "
                        "re-record with POSTBUS_RECORD_POSTFIX=1 and review the diff")
        return value


class LogMasked(Recording):
    """A recording whose answers are dicts with a ``log`` that ``mask`` normalizes
    (ports and queue IDs that differ from run to run) before it is compared or kept."""

    def __init__(self, name: str, mask: Callable[[Any], Any]) -> None:
        super().__init__(name)
        self.mask = mask

    def answer(self, case: str, live: Callable[[], Any] | None) -> Any:
        def masked() -> Any:
            assert live is not None
            value = live()
            if isinstance(value, dict):
                value = {**value, "log": self.mask(value["log"])}
            return value

        return super().answer(case, None if live is None else masked)
