"""smtp_generic_maps in the header block only (the table is an inline: one, no Redis)."""

from __future__ import annotations

from delivery_smtp.generic import GenericMaps
from postbus.config.loader import Config

MAPS = GenericMaps(Config.from_text(
    "smtp_generic_maps = inline:{ @postbus.test=@mail.example }\nmyorigin = postbus.test\n"
), lmtp=False)


async def test_headers_are_rewritten_and_the_body_is_not() -> None:
    content = (b"From: a@postbus.test\r\nX-Note: a@postbus.test\r\n\r\n"
               b"To: b@postbus.test\r\n")
    assert await MAPS.content(content) == (
        b"From: a@mail.example\r\nX-Note: a@postbus.test\r\n\r\nTo: b@postbus.test\r\n")


async def test_a_message_without_headers_is_left_alone() -> None:
    content = b"\r\nTo: b@postbus.test\r\n\r\nmore\r\n"
    assert await MAPS.content(content) == content
