"""Lookup orders (virtual(5), canonical(5), access(5), transport(5)) as written contracts."""

from __future__ import annotations

import pytest

from postbus.maps.addr_find import (
    ExtensionRules,
    Found,
    Route,
    apply_transport_entry,
    find_access,
    find_addr_access,
    find_client_access,
    find_domain_access,
    find_transport,
    find_virtual,
    propagate_extension,
    resolve_transport,
    split_extension,
)
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import Table, TableRetry


class Recorder(Table):
    """A table that answers nothing and records what it was asked."""

    def __init__(self, name: str, fixed: bool, log: list[str]) -> None:
        super().__init__(f"rec:{name}")
        self.fixed = fixed
        self.log = log
        self.name = name

    async def lookup(self, key: str) -> str | None:
        self.log.append(f"{self.name}:{key}")
        return None


def recorders() -> tuple[Maps, list[str]]:
    log: list[str] = []
    return Maps([Recorder("hash", True, log), Recorder("re", False, log)]), log


def local(domain: str) -> bool:
    return domain == "example.com"


async def test_virtual_order_each_key_against_every_table() -> None:
    maps, log = recorders()
    assert await find_virtual(maps, "user+ext@example.com", recipient_delimiter="+",
                              is_local=local) is None
    assert log == [
        "hash:user+ext@example.com", "re:user+ext@example.com",
        "hash:user@example.com",
        "hash:user+ext", "hash:user",
        "hash:@example.com",
    ]


async def test_virtual_order_remote_domain_skips_localpart() -> None:
    maps, log = recorders()
    await find_virtual(maps, "user+ext@other.org", recipient_delimiter="+", is_local=local)
    assert log == ["hash:user+ext@other.org", "re:user+ext@other.org",
                   "hash:user@other.org", "hash:@other.org"]


async def test_virtual_order_without_delimiter() -> None:
    maps, log = recorders()
    await find_virtual(maps, "user+ext@example.com", is_local=local)
    assert log == ["hash:user+ext@example.com", "re:user+ext@example.com",
                   "hash:user+ext", "hash:@example.com"]


# virtual(5) EXAMPLE and TABLE SEARCH ORDER
VIRTUAL = ("inline:{ postmaster@virtual-alias.domain=postmaster, "
           "user1@virtual-alias.domain=address1, "
           "user2@virtual-alias.domain=address2+x@x.org, "
           "@catchall.domain=catch@x.org, joe=joe@local.org }")

VIRTUAL_CASES = [
    ("user1@virtual-alias.domain", Found("address1")),
    ("user1+foo@virtual-alias.domain", Found("address1", "+foo")),
    ("USER1-bar@Virtual-Alias.Domain", Found("address1", "-bar")),
    ("anyone@catchall.domain", Found("catch@x.org")),
    ("joe+x@example.com", Found("joe@local.org", "+x")),
    ("joe@other.org", None),
]


@pytest.mark.parametrize(("address", "found"), VIRTUAL_CASES)
async def test_virtual_examples(address: str, found: Found | None) -> None:
    maps = open_maps(VIRTUAL)
    assert await find_virtual(maps, address, recipient_delimiter="+-", is_local=local) == found


@pytest.mark.parametrize(("local_part", "expected"), [
    ("user+foo", ("user", "+foo")),
    ("user-foo+bar", ("user", "-foo+bar")),
    ("+foo", ("+foo", None)),
    ("postmaster+x", ("postmaster", "+x")),  # only the exact name is protected
    ("PostMaster", ("PostMaster", None)),
    ("owner-list", ("owner-list", None)),
    ("list-request", ("list-request", None)),
    ("MAILER-DAEMON", ("MAILER-DAEMON", None)),
    ("double-bounce", ("double-bounce", None)),
])
def test_split_extension(local_part: str, expected: tuple[str, object]) -> None:
    assert split_extension(local_part, "+-") == expected


def test_split_extension_owner_request_not_special() -> None:
    rules = ExtensionRules(owner_request_special=False)
    assert split_extension("owner-list", "-", rules) == ("owner", "-list")


def test_propagate_extension() -> None:
    assert propagate_extension("joe@example.org", "+foo") == "joe+foo@example.org"
    assert propagate_extension("joe", "+foo") == "joe+foo"
    assert propagate_extension("joe@example.org", None) == "joe@example.org"


async def test_access_order_parent_style_dot() -> None:
    maps, log = recorders()
    await find_access(maps, "user+ext@sub.domain.tld", recipient_delimiter="+")
    assert log == [
        "hash:user+ext@sub.domain.tld", "re:user+ext@sub.domain.tld",
        "hash:user@sub.domain.tld",
        "hash:sub.domain.tld", "hash:.domain.tld", "hash:.tld",
        "hash:user+ext@", "hash:user@",
    ]


async def test_access_order_parent_matches_subdomains() -> None:
    maps, log = recorders()
    await find_access(maps, "user@sub.domain.tld", recipient_delimiter="+",
                      parent_matches_subdomains=True)
    assert log == ["hash:user@sub.domain.tld", "re:user@sub.domain.tld",
                   "hash:sub.domain.tld", "hash:domain.tld", "hash:tld", "hash:user@"]


async def test_access_null_sender() -> None:
    maps = open_maps("inline:{<>=REJECT}")
    assert await find_access(maps, "") == Found("REJECT")
    assert await find_access(maps, "", null_key="<null>") is None


# access(5) EMAIL ADDRESS PATTERNS
ACCESS = ("inline:{ user@domain=A, domain.tld=B, .sub.example=C, user@=D, "
          "1.2.3=E, 2001:db8=F, host.example=G }")

ACCESS_CASES = [
    ("user@domain", "A"),
    ("User+x@Domain", "A"),
    ("x@domain.tld", "B"),
    ("x@a.sub.example", "C"),
    ("x@sub.example", None),
    ("user@nowhere.org", "D"),
]


@pytest.mark.parametrize(("address", "value"), ACCESS_CASES)
async def test_access_examples(address: str, value: str | None) -> None:
    found = await find_access(open_maps(ACCESS), address, recipient_delimiter="+")
    assert (found.value if found else None) == value


async def test_client_order() -> None:
    maps, log = recorders()
    await find_client_access(maps, "mail.example.com", "192.0.2.7")
    assert log == ["hash:mail.example.com", "re:mail.example.com",
                   "hash:.example.com", "hash:.com",
                   "hash:192.0.2.7", "re:192.0.2.7", "hash:192.0.2", "hash:192.0", "hash:192"]
    maps, log = recorders()
    await find_addr_access(maps, "2001:db8::1")
    assert log == ["hash:2001:db8::1", "re:2001:db8::1", "hash:2001:db8:",
                   "hash:2001:db8", "hash:2001"]
    maps, log = recorders()
    await find_domain_access(maps, "192.0.2.7", parent_matches_subdomains=True)
    assert log == ["hash:192.0.2.7", "re:192.0.2.7"]  # no parents for a numeric name


async def test_client_examples() -> None:
    maps = open_maps(ACCESS)
    assert await find_client_access(maps, "unknown", "1.2.3.4") == "E"
    assert await find_client_access(maps, "host.example", "1.2.3.4") == "G"
    assert await find_addr_access(maps, "2001:db8::5") == "F"


async def test_transport_order() -> None:
    maps, log = recorders()
    assert await find_transport(maps, "user+ext@sub.domain.tld", recipient_delimiter="+") is None
    assert log == [
        "hash:user+ext@sub.domain.tld", "re:user+ext@sub.domain.tld",
        "hash:user@sub.domain.tld",
        "hash:sub.domain.tld", "hash:.domain.tld", "hash:.tld",
        "hash:*", "re:*",
    ]


# transport(5) EXAMPLES
TRANSPORT = ("inline:{ example.com=smtp:[mail.example.com]:2025, "
             ".example.com=relay:, { user@example.org = error:user has moved }, "
             "example.net=:[gateway.example.net], local.example=local, "
             "v6.example=smtp:[2001:db8::1]:25, retry.example=retry, noop.example=: }")

TRANSPORT_CASES = [
    ("x@example.com", Route("smtp", "[mail.example.com]:2025")),
    ("x@sub.example.com", Route("relay", "sub.example.com")),
    ("user+a@example.org", Route("error", "user has moved")),
    ("x@example.net", Route("default", "[gateway.example.net]")),
    ("x@local.example", Route("local", "local.example")),
    ("x@v6.example", Route("smtp", "[2001:db8::1]:25")),
    ("x@retry.example", Route("retry", "Address is undeliverable")),
    ("x@noop.example", Route("default", "dflt-hop")),
    ("x@nowhere.example", None),
]


@pytest.mark.parametrize(("address", "route"), TRANSPORT_CASES)
async def test_transport_examples(address: str, route: Route | None) -> None:
    maps = open_maps(TRANSPORT)
    domain = address.rpartition("@")[2]
    got = await resolve_transport(maps, address, domain, Route("default", "dflt-hop"),
                                  recipient_delimiter="+")
    assert got == route


async def test_transport_wildcard_and_parent_style() -> None:
    maps = open_maps("inline:{ example.com=a:, *=fallback }")
    assert await find_transport(maps, "x@sub.example.com", parent_matches_subdomains=True) == "a:"
    assert await find_transport(maps, "x@sub.example.com") == "fallback"
    assert apply_transport_entry("fallback", "d.org", Route("t", "h")) == Route("fallback", "d.org")


async def test_retry_propagates_through_orders() -> None:
    maps = open_maps("inline:{a=b}, fail:x")
    with pytest.raises(TableRetry):
        await find_virtual(maps, "u@d")
    with pytest.raises(TableRetry):
        await find_transport(maps, "u@d")
