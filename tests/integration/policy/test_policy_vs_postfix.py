"""Real Postfix uses our policy service: a private Debian Postfix with
``check_policy_service inet:127.0.0.1:PORT`` is SPF-checked, rate limited and
greylisted by it, and the message it then relays carries the header our service had
it prepend. Needs Postfix (the Debian package postfix, run as root)."""

from __future__ import annotations

import asyncio
import smtplib
import time
from pathlib import Path

import pytest

from postbus.servers import ServerProcess, free_port, wait_port
from tests import postfix_instance
from tests.integration.delivery.peers import DnsServer, Peer
from tests.integration.policy.policy_process import start_policy

pytestmark = pytest.mark.integration


def _rcpts(port: int, sender: str, *rcpts: str, data: bytes = b"") -> list[str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.example")
        client.mail(sender)
        replies = []
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            replies.append(f"{code} {text.decode()}")
        if data and replies[-1].startswith("250"):
            client.data(data)
    return replies


async def test_postfix_greylisted_rate_limited_and_spf_checked(
    redis: ServerProcess, tmp_path: Path
) -> None:
    if not postfix_instance.available():
        pytest.skip("Postfix not installed or not root (Debian package postfix)")
    dns = await DnsServer({("ok.test", "TXT"): ['"v=spf1 ip4:127.0.0.0/8 -all"'],
                           ("bad.test", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"']}).start()
    policy = start_policy(tmp_path, f"postbus_redis_url = {redis.url}/0\n"
                          f"postbus_dns_servers = 127.0.0.1:{dns.port}\n"
                          "postbus_policy_checks = spf, ratelimit, greylist\n"
                          "postbus_policy_spf_skip_addresses =\n"
                          "postbus_policy_ratelimit_limits = sender 2/1h\n"
                          "postbus_policy_greylist_delay = 2s\n")
    port = free_port()
    with Peer() as peer:
        instance = postfix_instance.PostfixInstance(port, {
            "myhostname": "mx.postbus.test",
            "relayhost": f"[127.0.0.1]:{peer.port}",
            "smtpd_recipient_restrictions":
                f"check_policy_service inet:127.0.0.1:{policy.port}, permit_mynetworks, "
                "reject_unauth_destination",
        })
        instance.start()
        try:
            wait_port("127.0.0.1", port, 30)
            assert await asyncio.to_thread(_rcpts, port, "a@bad.test", "bob@remote.test") == [
                "550 5.7.23 <bob@remote.test>: Recipient address rejected: Message rejected "
                "due to: SPF fail - not authorized. Please see http://www.openspf.net/Why?"
                "s=mfrom;id=a@bad.test;ip=127.0.0.1;r=remote.test"]
            grey = ("450 4.2.0 <bob@remote.test>: Recipient address rejected: Greylisted, "
                    "see http://postgrey.schweikert.ch/help/remote.test.html")
            started = time.monotonic()
            assert await asyncio.to_thread(_rcpts, port, "a@ok.test", "bob@remote.test") == \
                [grey]
            # the rate limit (sender 2/1h, before greylisting) on another sender
            assert await asyncio.to_thread(
                _rcpts, port, "r@ok.test", *["bob@remote.test"] * 3) == [
                grey, grey,
                "450 4.7.1 <bob@remote.test>: Recipient address rejected: Rate limit exceeded "
                "for sender r@ok.test: more than 2 per 1h"]
            # the retry after the delay passes, with the Received-SPF header
            await asyncio.sleep(max(0.0, started + 3.1 - time.monotonic()))
            message = b"Subject: hi\r\n\r\nbody\r\n"
            assert await asyncio.to_thread(_rcpts, port, "a@ok.test", "bob@remote.test",
                                           data=message) == ["250 2.1.5 Ok"]
            deadline = time.monotonic() + 60
            while not peer.handler.messages:
                assert time.monotonic() < deadline, "Postfix relayed nothing"
                await asyncio.sleep(0.05)
            content = peer.handler.messages[0][2].decode()
            assert ("Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=127.0.0.1; "
                    "helo=client.example; envelope-from=a@ok.test; receiver=remote.test"
                    in content)
            assert "X-Greylist" not in content  # one action per reply: the first PREPEND
        finally:
            instance.stop()
            policy.stop()
            dns.close()
