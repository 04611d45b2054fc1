"""The delivery count and stream sequence of a JetStream message, read from its ack
subject.

nats.py's ``msg.metadata`` parses the whole subject into objects, a datetime
among them: about 8 us per message, and the qmgr reads it twice per delivery
(the new-mail trigger, the agent's report), an agent once (its job). These
read the two numbers Postbus uses from the subject's usual form
(``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``);
any other form (a domain, an account hash) goes through nats.py.
"""

from __future__ import annotations

from nats.aio.msg import Msg


def deliveries(msg: Msg) -> int:
    """How often JetStream has handed ``msg`` out, at least 1
    (``msg.metadata.num_delivered or 1``)."""
    tokens = _tokens(msg.reply)
    if tokens is None:
        return msg.metadata.num_delivered or 1
    return int(tokens[4]) or 1


def stream_sequence(msg: Msg) -> int:
    """The message's sequence in its stream (``msg.metadata.sequence.stream``)."""
    tokens = _tokens(msg.reply)
    if tokens is None:
        return msg.metadata.sequence.stream
    return int(tokens[5])


def _tokens(reply: str | None) -> list[str] | None:
    if reply and reply.startswith("$JS.ACK."):
        tokens = reply.split(".")
        if len(tokens) == 9:
            return tokens
    return None
