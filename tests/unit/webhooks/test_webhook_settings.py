"""A webhook's settings from its master.cf line, refused at start when wrong; its signature."""

from __future__ import annotations

from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from webhooks import sign
from webhooks.settings import Settings

MASTER = "crm unix - - n - 1 webhooks\n"


def settings(main_cf: str, name: str = "crm") -> Settings:
    cfg = Config.from_text(main_cf, MASTER, service="crm")
    return Settings.from_config(cfg, name)


def test_defaults_and_overrides() -> None:
    got = settings("postbus_webhook_url = https://crm.example.com/in?key=abc\n"
                   "postbus_webhook_secret = text-secret\n")
    assert got.kinds == {"received", "deferred", "delivered", "bounced", "expired", "held",
                         "released", "deleted"}
    assert (got.timeout, got.max_attempts, got.min_backoff, got.max_backoff, got.concurrency) \
        == (10.0, 15, 5.0, 3600.0, 10)
    assert got.keys == (b"text-secret",)
    assert got.shown_url == "https://crm.example.com/in"
    assert [got.backoff(n) for n in (1, 2, 3, 10, 11, 12, 40)] == [
        5, 10, 20, 2560, 3600, 3600, 3600]
    cfg = Config.from_text(
        "hook_secret = whsec_c2VjcmV0\npostbus_events_record = delivered, active\n",
        MASTER + "  -o postbus_webhook_url=http://user:pw@[::1]:8080/x\n"
                 "  -o postbus_webhook_events=delivered,active\n"
                 "  -o postbus_webhook_secret=$hook_secret\n",
        service="crm")
    got = Settings.from_config(cfg, "crm")
    assert got.kinds == {"delivered", "active"}
    assert got.keys == (b"secret",)
    assert got.shown_url == "http://[::1]:8080/x"


def test_no_url_needs_no_secret() -> None:
    assert settings("").url == "" and settings("").keys == ()


@pytest.mark.parametrize(("main_cf", "text"), [
    ("postbus_webhook_url = ftp://crm.example.com/\npostbus_webhook_secret = s\n",
     "parameter postbus_webhook_url: bad URL 'ftp://crm.example.com/'"),
    ("postbus_webhook_url = https:///path\npostbus_webhook_secret = s\n",
     "parameter postbus_webhook_url: bad URL"),
    ("postbus_webhook_url = https://h/\npostbus_webhook_secret = s\n"
     "postbus_webhook_events = delivered, exploded\n",
     "parameter postbus_webhook_events: unknown event kind 'exploded'; known: received, active,"),
    ("postbus_webhook_url = https://h/\npostbus_webhook_secret = s\n"
     "postbus_webhook_events = delivered, removed\n",
     "parameter postbus_webhook_events: event kind 'removed' is not recorded: add it to"
     " postbus_events_record too"),
    ("postbus_webhook_url = https://h/\n",
     "parameter postbus_webhook_secret: postbus_webhook_url is set, but no secret to sign with"),
    ("postbus_webhook_url = https://h/\npostbus_webhook_secret = whsec_%%%\n",
     "parameter postbus_webhook_secret: a whsec_ secret must be base64"),
    ("postbus_webhook_url = https://h/\npostbus_webhook_secret = s\n"
     "postbus_webhook_secret_file = /nonexistent\n",
     "parameter postbus_webhook_secret_file: set postbus_webhook_secret or "
     "postbus_webhook_secret_file, not both"),
    ("postbus_webhook_url = https://h/\npostbus_webhook_secret_file = /nonexistent/key\n",
     "parameter postbus_webhook_secret_file: cannot read /nonexistent/key:"),
])
def test_bad_settings_stop_the_start(main_cf: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(main_cf)
    assert str(info.value).startswith(text), str(info.value)


def test_the_service_name_must_be_a_plain_word() -> None:
    with pytest.raises(ConfigError, match=r"webhooks service name 'a\.b': use letters"):
        settings("", name="a.b")


def test_secret_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("whsec_c2VjcmV0\n")
    got = settings(f"postbus_webhook_url = https://h/\npostbus_webhook_secret_file = {key}\n")
    assert got.keys == (b"secret",)
    key.write_text("\n")
    with pytest.raises(ConfigError, match="no secret to sign with"):
        settings(f"postbus_webhook_url = https://h/\npostbus_webhook_secret_file = {key}\n")


def test_signature_is_standard_webhooks() -> None:
    """The test vector of the Standard Webhooks reference libraries."""
    got = settings("postbus_webhook_url = https://h/\n"
                   "postbus_webhook_secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
    headers = sign.headers(got.keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                           b'{"test": 2432232314}')
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    two = sign.signature((b"a", b"b"), "id", 1, b"{}").split(" ")
    assert len(two) == 2 and all(part.startswith("v1,") for part in two) and two[0] != two[1]
