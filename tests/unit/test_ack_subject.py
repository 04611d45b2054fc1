"""The delivery count and stream sequence read from a JetStream ack subject agree with
nats.py's own parse (``msg.metadata``), in the usual form and in the others."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from postbus.bus.ack_subject import deliveries, stream_sequence


def msg(reply: str) -> Msg:
    return Msg(_client=None, subject="postbus.deliver.smtp.Q1", reply=reply)  # type: ignore[arg-type]


@pytest.mark.parametrize("reply", [
    "$JS.ACK.POSTBUS_WORK.smtp.1.12345.6789.1764512345123456789.17",
    "$JS.ACK.POSTBUS_WORK.qmgr-status.3.7.2.1764512345123456789.0",
    "$JS.ACK.POSTBUS_WORK.smtp.0.1.1.1764512345123456789.0",  # a count of 0 reads as 1
    # with a domain and an account hash (nats.py's second form)
    "$JS.ACK.hub.ACCHASH.POSTBUS_WORK.smtp.4.99.98.1764512345123456789.5.rnd",
    "$JS.ACK._.ACCHASH.POSTBUS_WORK.smtp.2.42.41.1764512345123456789.0",
])
def test_the_numbers_agree_with_nats_py(reply: str) -> None:
    assert deliveries(msg(reply)) == (msg(reply).metadata.num_delivered or 1)
    assert stream_sequence(msg(reply)) == msg(reply).metadata.sequence.stream


def test_a_message_that_is_not_from_jetstream_is_refused_as_nats_py_does() -> None:
    for reply in ("", "_INBOX.abc.1", "$JS.ACK.too.short"):
        with pytest.raises(NotJSMessageError):
            deliveries(msg(reply))
        with pytest.raises(NotJSMessageError):
            stream_sequence(msg(reply))
