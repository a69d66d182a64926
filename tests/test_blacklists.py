"""check_blacklists() against FakeDnsServer zones: listings, errors that are never listings."""

from __future__ import annotations

import ipaddress
import pickle
import time
from collections.abc import Iterator

import pytest

from mailbridge import (
    BlacklistLookupFailed,
    BlacklistQueryRefused,
    BlacklistResolverUntrusted,
    BlacklistTimeout,
    Category,
    ConfigurationError,
)
from mailbridge.deliverability import (
    BARRACUDA,
    DEFAULT_BLACKLISTS,
    Blacklist,
    BlacklistCheck,
    ListStatus,
    check_blacklists,
)
from mailbridge.deliverability._dnsbl import MAX_ADDRESSES, reverse_name
from mailbridge.testing import FakeDnsServer

LISTED_IP = "192.0.2.9"
CLEAN_IP = "192.0.2.8"
TEST_ENTRY = {"2.0.0.127": {"A": "127.0.0.2", "TXT": '"test entry"'}}
BL = Blacklist(name="Test BL", zone="bl.test", codes={"127.0.0.2": "a spam source"})
V6 = Blacklist(name="Six BL", zone="six.test", ipv6=True)
SPAMHAUS = DEFAULT_BLACKLISTS[0]


def _zone(**entries: dict[str, str]) -> dict[str, dict[str, str]]:
    return {**TEST_ENTRY, **entries}


@pytest.fixture
def dns() -> Iterator[FakeDnsServer]:
    with FakeDnsServer(
        {
            "bl.test": _zone(**{"9.2.0.192": {"A": "127.0.0.2", "TXT": '"Listed: see bl.test/9"'}}),
            "hosts.test": {
                "mail": {"A": [LISTED_IP, CLEAN_IP], "AAAA": "2001:db8::25"},
                "many": {"A": [f"198.51.100.{n}" for n in range(1, 21)]},
                "v6only": {"AAAA": "2001:db8::9"},
            },
        }
    ) as server:
        yield server


def _check(dns: FakeDnsServer, target: str, *lists: Blacklist, **options: object):  # type: ignore[no-untyped-def]
    options.setdefault("timeout", 3.0)
    return check_blacklists(target, resolver=dns.resolver(5.0), lists=lists or (BL,), **options)  # type: ignore[arg-type]


def test_a_listing_carries_the_code_its_meaning_and_the_txt_reason(dns: FakeDnsServer) -> None:
    report = _check(dns, LISTED_IP)
    (result,) = report.results
    assert result.status == ListStatus.LISTED and not report.ok and report.complete
    assert result.codes == ("127.0.0.2",) and result.meanings == ("a spam source",)
    assert result.reason == "Listed: see bl.test/9"
    assert result.diagnosis is not None and result.diagnosis.category == Category.BLACKLISTED
    assert "Listed on 1 of 1 list." in str(report) and "ask for removal" in str(report)
    # the self-test came first: 127.0.0.2 and 127.0.0.1, then the address, then its TXT
    assert [(q.name, q.rdtype) for q in dns.queries] == [
        ("2.0.0.127.bl.test.", "A"),
        ("1.0.0.127.bl.test.", "A"),
        ("9.2.0.192.bl.test.", "A"),
        ("9.2.0.192.bl.test.", "TXT"),
    ]


def test_an_address_the_list_does_not_hold_is_clean(dns: FakeDnsServer) -> None:
    report = _check(dns, CLEAN_IP)
    assert [r.status for r in report.results] == [ListStatus.CLEAN]
    assert report.ok and report.complete and report.listed == () and report.advice == ()
    assert "Not listed on any of 1 list checked." in str(report)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("127.255.255.254", "your DNS resolver is blocked by Spamhaus ZEN"),
        ("127.255.255.255", "too many queries"),
        ("127.255.255.252", "typing error in the list name"),
    ],
)
@pytest.mark.parametrize("where", ["self-test", "lookup"])
def test_spamhaus_error_codes_are_errors_with_advice_never_listings(
    code: str, words: str, where: str
) -> None:
    entries = {"9.2.0.192": {"A": code}}
    if where == "self-test":  # a blocked resolver gets the code for every name
        entries["2.0.0.127"] = {"A": code}
    zones = {"zen.spamhaus.org": _zone(**entries)}
    with FakeDnsServer(zones) as server:
        report = _check(server, LISTED_IP, SPAMHAUS)
    (result,) = report.results
    assert result.status == ListStatus.ERROR and report.ok and not report.complete
    assert isinstance(result.error, BlacklistQueryRefused) and result.codes == (code,)
    assert result.diagnosis is not None
    assert result.diagnosis.category == Category.BLACKLIST_QUERY_REFUSED
    assert words in result.diagnosis.summary and "not a listing" in result.diagnosis.summary
    if code != "127.255.255.252":
        assert any("DQS" in hint for hint in result.diagnosis.hints)
    assert "Listed on" not in str(report) and "could not be checked" in str(report)


def test_an_error_code_among_listing_codes_is_still_an_error() -> None:
    zones = {"zen.spamhaus.org": _zone(**{"9.2.0.192": {"A": ["127.0.0.2", "127.255.255.254"]}})}
    with FakeDnsServer(zones) as server:
        (result,) = _check(server, LISTED_IP, SPAMHAUS).results
    assert result.status == ListStatus.ERROR and result.codes == ("127.255.255.254",)


@pytest.mark.parametrize("where", ["self-test", "lookup"])
def test_a_resolver_that_rewrites_unknown_names_is_not_believed(where: str) -> None:
    # An NXDOMAIN-hijacking resolver answers with its advertising server for every name.
    hijacked = {"A": "198.51.100.7"}
    entries = {"8.2.0.192": hijacked}
    if where == "self-test":
        entries["1.0.0.127"] = hijacked
    with FakeDnsServer({"bl.test": _zone(**entries)}) as server:
        report = _check(server, CLEAN_IP)
    (result,) = report.results
    assert result.status == ListStatus.ERROR and report.ok
    assert isinstance(result.error, BlacklistResolverUntrusted)
    assert result.diagnosis is not None and "outside 127.0.0.0/8" in result.diagnosis.summary


def test_a_list_without_its_test_entry_is_an_error() -> None:
    with FakeDnsServer({"bl.test": {"9.2.0.192": {"A": "127.0.0.2"}}}) as server:
        (result,) = _check(server, LISTED_IP).results
    assert result.status == ListStatus.ERROR
    assert isinstance(result.error, BlacklistResolverUntrusted)
    assert result.diagnosis is not None and "127.0.0.2" in result.diagnosis.summary
    assert any("register" in hint for hint in result.diagnosis.hints)


def test_a_list_that_lists_127_0_0_1_lists_everything_and_is_an_error() -> None:
    zones = {"bl.test": _zone(**{"1.0.0.127": {"A": "127.0.0.2"}, "8.2.0.192": {"A": "127.0.0.2"}})}
    with FakeDnsServer(zones) as server:
        (result,) = _check(server, CLEAN_IP).results
    assert result.status == ListStatus.ERROR and "127.0.0.1" in str(result.error)


def test_a_servfail_is_a_temporary_error(dns: FakeDnsServer) -> None:
    dns.fail("9.2.0.192.bl.test")
    (result,) = _check(dns, LISTED_IP).results
    assert isinstance(result.error, BlacklistLookupFailed) and result.error.temporary
    assert result.status == ListStatus.ERROR


def test_a_silent_list_times_out_while_the_others_answer_within_the_limit(
    dns: FakeDnsServer,
) -> None:
    dns.add_zone("slow.test", TEST_ENTRY)
    dns.timeout("9.2.0.192.slow.test")
    slow = Blacklist(name="Slow", zone="slow.test")
    started = time.monotonic()
    report = _check(dns, LISTED_IP, BL, slow, timeout=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5  # the resolver alone would wait 5 s
    by_list = {r.list_name: r for r in report.results}
    assert by_list["Test BL"].status == ListStatus.LISTED
    assert isinstance(by_list["Slow"].error, BlacklistTimeout)
    assert isinstance(by_list["Slow"].error, TimeoutError) and by_list["Slow"].error.temporary


def test_lists_are_asked_concurrently_and_the_total_time_is_bounded(dns: FakeDnsServer) -> None:
    lists = []
    for number in range(6):
        zone = f"l{number}.test"
        dns.add_zone(zone, TEST_ENTRY)
        dns.delay(f"2.0.0.127.{zone}", 0.4)
        lists.append(Blacklist(name=f"L{number}", zone=zone))
    started = time.monotonic()
    report = _check(dns, CLEAN_IP, *lists)
    assert time.monotonic() - started < 1.5  # one after the other: 2.4 s
    assert [r.status for r in report.results] == [ListStatus.CLEAN] * 6
    for number in range(6):
        dns.timeout(f"8.2.0.192.l{number}.test")
    started = time.monotonic()
    report = _check(dns, CLEAN_IP, *lists, timeout=1.0)
    assert time.monotonic() - started < 2.5  # one after the other: 6 s
    assert all(isinstance(r.error, BlacklistTimeout) for r in report.results)


def test_ipv6_addresses_are_asked_as_reversed_nibbles() -> None:
    # RFC 5782 section 2.4's example
    address = ipaddress.ip_address("2001:db8:1:2:3:4:567:89ab")
    nibbles = "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
    assert reverse_name(address) == nibbles
    assert reverse_name(ipaddress.ip_address("192.0.2.99")) == "99.2.0.192"
    name = reverse_name(ipaddress.ip_address("2001:db8::25"))
    zones = {"six.test": _zone(**{name: {"A": "127.0.0.2"}}), "bl.test": TEST_ENTRY}
    with FakeDnsServer(zones) as server:
        report = _check(server, "2001:DB8::25", V6, BL)
    statuses = {r.list_name: r.status for r in report.results}
    assert statuses == {"Six BL": ListStatus.LISTED, "Test BL": ListStatus.SKIPPED}
    assert report.addresses == ("2001:db8::25",) and "lists no IPv6" in str(report)


def test_an_ipv4_mapped_ipv6_address_is_checked_as_ipv4(dns: FakeDnsServer) -> None:
    report = _check(dns, f"::ffff:{LISTED_IP}")
    assert report.addresses == (LISTED_IP,) and report.results[0].status == ListStatus.LISTED


def test_every_address_of_a_host_name_is_checked(dns: FakeDnsServer) -> None:
    dns.add_zone("six.test", TEST_ENTRY)
    report = _check(dns, "mail.hosts.test", BL, V6)
    assert report.addresses == (CLEAN_IP, LISTED_IP, "2001:db8::25")
    got = {(r.address, r.list_name): r.status for r in report.results}
    assert got == {
        (CLEAN_IP, "Test BL"): ListStatus.CLEAN,
        (LISTED_IP, "Test BL"): ListStatus.LISTED,
        ("2001:db8::25", "Test BL"): ListStatus.SKIPPED,
        (CLEAN_IP, "Six BL"): ListStatus.CLEAN,
        (LISTED_IP, "Six BL"): ListStatus.CLEAN,
        ("2001:db8::25", "Six BL"): ListStatus.CLEAN,
    }
    assert not report.ok and "mail.hosts.test" in str(report)


def test_a_host_name_gives_at_most_eight_addresses(dns: FakeDnsServer) -> None:
    report = _check(dns, "many.hosts.test")
    assert len(report.addresses) == MAX_ADDRESSES == 8
    assert len(report.results) == 8


def test_a_host_name_without_addresses_is_a_typed_error(dns: FakeDnsServer) -> None:
    with pytest.raises(BlacklistLookupFailed) as caught:
        _check(dns, "nothing.hosts.test")
    assert not caught.value.temporary and caught.value.diagnosis.category == Category.HOST_NOT_FOUND
    assert pickle.loads(pickle.dumps(caught.value)).zone is None
    dns.timeout("mail.hosts.test", "AAAA")
    started = time.monotonic()
    with pytest.raises(BlacklistTimeout):
        _check(dns, "mail.hosts.test", timeout=0.5)
    assert time.monotonic() - started < 2.0  # the resolver alone would wait 5 s


@pytest.mark.parametrize(
    "target", ["bad..host", "", "127.1", "-x.example", "a" * 64 + ".example", "host name"]
)
def test_what_is_neither_an_ip_address_nor_a_host_name_is_refused(
    dns: FakeDnsServer, target: str
) -> None:
    with pytest.raises(ConfigurationError, match="ip_or_host"):
        _check(dns, target)
    assert dns.query_count == 0


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_the_time_limit_must_be_finite_and_positive(dns: FakeDnsServer, timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        _check(dns, LISTED_IP, timeout=timeout)


def test_a_dqs_key_sends_spamhaus_queries_to_the_dqs_zone_and_is_never_shown() -> None:
    key = "abcdefghijklmnopqrstuvwxyz"
    zones = {
        f"{key}.zen.dq.spamhaus.net": _zone(**{"9.2.0.192": {"A": "127.0.0.4"}}),
        "bl.test": TEST_ENTRY,
    }
    with FakeDnsServer(zones) as server:
        report = _check(server, LISTED_IP, SPAMHAUS, BL, dqs_key=key)
        assert all(".zen.spamhaus.org" not in q.name for q in server.queries)
    by_list = {r.list_name: r for r in report.results}
    spamhaus = by_list["Spamhaus ZEN"]
    assert spamhaus.status == ListStatus.LISTED and spamhaus.zone == "<key>.zen.dq.spamhaus.net"
    assert spamhaus.meanings == ("XBL: an infected or hijacked computer (exploits, botnets)",)
    assert by_list["Test BL"].status == ListStatus.CLEAN  # other lists are asked as usual
    check = BlacklistCheck(dqs_key=key)
    for text in (str(report), repr(report), repr(check)):
        assert key not in text
    with pytest.raises(ConfigurationError) as caught:
        BlacklistCheck(dqs_key="not a key!")
    assert "not a key" not in str(caught.value)


def test_a_dqs_error_is_reported_without_the_key() -> None:
    key = "abcdefghijklmnopqrstuvwxyz"
    zones = {f"{key}.zen.dq.spamhaus.net": {"2.0.0.127": {"A": "127.255.255.250"}}}
    with FakeDnsServer(zones) as server:
        (result,) = _check(server, LISTED_IP, SPAMHAUS, dqs_key=key).results
    assert isinstance(result.error, BlacklistQueryRefused)
    assert result.diagnosis is not None and any("DQS key" in h for h in result.diagnosis.hints)
    assert key not in str(result.error) and key not in str(result.diagnosis)
    assert result.error.zone == "<key>.zen.dq.spamhaus.net"


def test_the_default_lists_are_alive_ones_with_sources() -> None:
    zones = {blacklist.zone for blacklist in DEFAULT_BLACKLISTS}
    assert not any("sorbs" in zone for zone in zones)  # decommissioned in June 2024
    assert "zen.spamhaus.org" in zones
    assert all(blacklist.source and blacklist.removal for blacklist in DEFAULT_BLACKLISTS)
    assert SPAMHAUS.is_error("127.255.255.254") and not SPAMHAUS.is_error("127.0.0.2")


def test_the_default_lists_against_fake_zones() -> None:
    zones = {b.zone: _zone(**{"9.2.0.192": {"A": "127.0.0.2"}}) for b in DEFAULT_BLACKLISTS}
    with FakeDnsServer(zones) as server:
        report = check_blacklists(LISTED_IP, resolver=server.resolver(), timeout=3)
    assert len(report.listed) == len(DEFAULT_BLACKLISTS) and report.complete


def test_the_defaults_are_complete_from_an_unregistered_resolver() -> None:
    # Barracuda answers only registered resolvers: from any other, its test entry is
    # missing. The default check must not then be incomplete for everybody.
    zones = {b.zone: _zone() for b in DEFAULT_BLACKLISTS}
    zones[BARRACUDA.zone] = {}  # an unregistered resolver sees no test entry
    with FakeDnsServer(zones) as server:
        report = check_blacklists(CLEAN_IP, resolver=server.resolver(), timeout=3)
        assert report.complete and report.ok
        opted_in = check_blacklists(
            CLEAN_IP, resolver=server.resolver(), lists=(*DEFAULT_BLACKLISTS, BARRACUDA), timeout=3
        )
    assert BARRACUDA not in DEFAULT_BLACKLISTS and BARRACUDA.zone == "b.barracudacentral.org"
    assert not opted_in.complete
    assert [r.list_name for r in opted_in.results if r.status == ListStatus.ERROR] == [
        "Barracuda BRBL"
    ]


@pytest.mark.parametrize(
    ("field", "value"), [("zone", "not a zone"), ("zone", "x"), ("error_network", "10.0.0.0/8")]
)
def test_a_blacklist_definition_is_checked(field: str, value: str) -> None:
    arguments = {"name": "X", "zone": "bl.test", field: value}
    with pytest.raises(ConfigurationError, match=field):
        Blacklist(**arguments)  # type: ignore[arg-type]


def test_without_a_system_resolver_the_check_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver

    def missing(*args: object, **kwargs: object) -> None:
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.resolver.Resolver, "__init__", missing)
    with pytest.raises(ConfigurationError, match="resolver"):
        check_blacklists(LISTED_IP, lists=[BL], timeout=1)


def test_a_hostile_txt_reason_is_made_plain_and_short() -> None:
    hostile = '"line one\\013\\010Injected: header" "' + "x" * 250 + '" "' + "y" * 250 + '"'
    entry = {"A": ["127.0.0.2", "127.0.0.3"], "TXT": hostile}
    with FakeDnsServer({"bl.test": _zone(**{"9.2.0.192": entry})}) as server:
        (result,) = _check(server, LISTED_IP).results
    assert result.codes == ("127.0.0.2", "127.0.0.3")
    assert result.meanings == ("a spam source", "code 127.0.0.3")
    assert result.reason is not None and len(result.reason) == 300
    assert result.reason.startswith("line one Injected: headerxxx")  # strings joined
    assert result.reason.endswith("y...")
    assert "\n" not in str(result) and "\r" not in str(result)


def test_a_failed_dqs_query_keeps_the_key_out_of_the_whole_exception_chain() -> None:
    import traceback

    key = "abcdefghijklmnopqrstuvwxyz"
    zones = {f"{key}.zen.dq.spamhaus.net": {"2.0.0.127": {"A": "127.0.0.2"}}}
    with FakeDnsServer(zones) as server:
        server.fail(f"2.0.0.127.{key}.zen.dq.spamhaus.net", "SERVFAIL")
        (result,) = _check(server, LISTED_IP, SPAMHAUS, dqs_key=key).results
    assert result.status == ListStatus.ERROR and result.error is not None
    chain: list[BaseException] = []
    error: BaseException | None = result.error
    while error is not None and len(chain) < 10:  # bounded walk of cause and context
        chain.append(error)
        error = error.__cause__ or error.__context__
    shown = "".join(traceback.format_exception(result.error)) + "".join(map(repr, chain))
    assert key not in shown and "no DNS server answered" in shown
