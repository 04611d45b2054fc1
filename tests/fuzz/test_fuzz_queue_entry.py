"""Fuzzing the queue entry codec (postbus.queue.entry): strict decoding, exact round trips.

Whatever bytes come off the bus, ``decode`` either returns an object whose
every field has its declared type, or raises CodecError (the message then
goes to the corrupt queue with the reason) — never a TypeError or an
AttributeError later in the qmgr.  Every valid object encodes and decodes
back to itself.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, get_args, get_origin

import orjson
from hypothesis import given
from hypothesis import strategies as st

from postbus.queue.entry import (
    CODEC_VERSION,
    QUEUE_NAMES,
    CodecError,
    DeliveryJob,
    DeliveryStatus,
    QueueEntry,
    RcptResult,
    Recipient,
)

CLASSES: list[Any] = [QueueEntry, DeliveryJob, DeliveryStatus]
NESTED = {QueueEntry: ("recipients", Recipient), DeliveryJob: ("recipients", Recipient),
          DeliveryStatus: ("results", RcptResult)}


def _conforms(value: Any, hint: Any) -> bool:
    """Does a decoded value have the declared type (bool is not an int, an int is a float)?"""
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and _well_typed(value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _well_typed(obj: Any) -> bool:
    hints = typing.get_type_hints(type(obj))
    return all(_conforms(getattr(obj, f.name), hints[f.name]) for f in dataclasses.fields(obj))


def _decode_all(raw: bytes) -> None:
    for cls in CLASSES:
        try:
            obj = cls.decode(raw)
        except CodecError:
            continue
        assert _well_typed(obj), obj


# -- any bytes, any JSON ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_FIELDS = sorted({f.name for cls in [*CLASSES, Recipient, RcptResult]
                  for f in dataclasses.fields(cls)})
field_value = st.one_of(json_values, st.sampled_from([*QUEUE_NAMES, "pending", "sent", ""]))
recipient_like = st.dictionaries(st.sampled_from(_FIELDS), field_value, max_size=10)
entry_like = st.fixed_dictionaries(
    {"v": st.sampled_from([CODEC_VERSION, CODEC_VERSION, 2, "1", None])},
    optional={name: (st.lists(recipient_like, max_size=3)
                     if name in ("recipients", "results") else field_value)
              for name in _FIELDS},
)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_codec_error(raw: bytes) -> None:
    _decode_all(raw)


@given(entry_like)
def test_any_json_object_decodes_well_typed_or_codec_error(data: dict[str, Any]) -> None:
    _decode_all(orjson.dumps(data))


@given(json_values)
def test_any_json_value_decodes_or_codec_error(data: Any) -> None:
    _decode_all(orjson.dumps(data))


# -- valid objects round-trip ----------------------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
counts = st.integers(min_value=0, max_value=2**40)
recipients = st.builds(
    Recipient, address=texts, orig_rcpt=texts, notify=texts,
    state=st.sampled_from(typing.get_args(typing.get_type_hints(Recipient)["state"])),
    dsn=texts, reason=texts, relay=texts, transport=texts,
)
entries = st.builds(
    QueueEntry, queue_id=texts, sender=texts, recipients=st.lists(recipients, max_size=4),
    arrival_time=times, size=counts, chunks=counts, queue=st.sampled_from(QUEUE_NAMES),
    attempts=counts, next_attempt=times, last_attempt=times, message_id=texts,
    client_name=texts, client_addr=texts, helo=texts, protocol=texts, env_id=texts, ret=texts,
    smtputf8=st.booleans(), bounce_of=texts, warned=st.booleans(), notified=st.booleans(),
)
jobs = st.builds(
    DeliveryJob, queue_id=texts, transport=texts, nexthop=texts, sender=texts,
    recipients=st.lists(recipients, max_size=4), indexes=st.lists(counts, max_size=4),
    attempt=counts, arrival_time=times, size=counts, chunks=counts, queued_time=times,
    active_time=times, env_id=texts, ret=texts, whole=st.booleans(),
)
results = st.builds(RcptResult, index=counts,
                    status=st.sampled_from(["sent", "deferred", "bounced"]),
                    dsn=texts, reason=texts, relay=texts)
statuses = st.builds(DeliveryStatus, queue_id=texts, attempt=counts, transport=texts,
                     nexthop=texts, results=st.lists(results, max_size=4))


@given(st.one_of(entries, jobs, statuses))
def test_valid_objects_round_trip(obj: Any) -> None:
    raw = obj.encode()
    assert type(obj).decode(raw) == obj
    assert type(obj).decode(raw).encode() == raw


def _mutate(obj: Any, path: list[str | int], value: Any) -> bytes:
    """A valid object's JSON with one field (or a recipient's field) set to ``value``."""
    data = orjson.loads(obj.encode())
    nested, _ = NESTED[type(obj)]
    target = data
    if len(path) == 3 and path[0] == nested and data[nested]:
        target = data[nested][int(path[1]) % len(data[nested])]
        path = path[2:]
    if len(path) == 1:  # else a nested path that does not apply: left valid
        target[str(path[0])] = value
    return orjson.dumps(data)


_nested_fields = sorted({f.name for cls in (Recipient, RcptResult)
                         for f in dataclasses.fields(cls)})


@given(st.one_of(entries, jobs, statuses),
       st.one_of(st.tuples(st.sampled_from(_FIELDS)).map(list),
                 st.tuples(st.sampled_from(["recipients", "results"]), st.integers(0, 3),
                           st.sampled_from(_nested_fields)).map(list)),
       field_value)
def test_a_valid_object_with_one_bad_field_is_refused(obj: Any, path: list[str | int],
                                                      value: Any) -> None:
    raw = _mutate(obj, path, value)
    try:
        decoded = type(obj).decode(raw)
    except CodecError:
        return
    assert _well_typed(decoded), decoded
