"""FakeDnsServer against the real dnspython resolver."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import pytest

from mailbridge.testing._dns import DnsQuery, FakeDnsServer, ZoneRecords

ZONES: dict[str, ZoneRecords] = {
    "example.test": {
        "@": {
            "MX": ["10 mx1.example.test.", "20 mx2"],
            "TXT": ['"v=spf1 include:spf.app.test ~all"', '"part one" "part two"'],
        },
        "mx1": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
        "mx2": {"A": "127.0.0.2"},
        "_submission._tcp": {"SRV": ["0 1 587 mail.example.test."]},
        "www": {"CNAME": ["example.test."]},
        "alias": {"CNAME": "www"},
        "dangling": {"CNAME": "gone.example.test."},
        "outside": {"CNAME": "mail.elsewhere.invalid."},
        "short": {"A": (60, ["127.0.0.3"])},
    }
}

REVERSE_V4 = """
@                IN SOA ns.example.test. hostmaster.example.test. 7 3600 600 86400 60
@                IN NS  ns.example.test.
1.0.0            IN PTR mx1.example.test.
2.0.0     3600   IN PTR mx2.example.test.
"""


@pytest.fixture
def server() -> Iterator[FakeDnsServer]:
    with FakeDnsServer(ZONES) as fake:
        yield fake


@pytest.fixture
def resolver(server: FakeDnsServer) -> dns.resolver.Resolver:
    return server.resolver()


def _query(
    server: FakeDnsServer, name: str, rdtype: str, *, tcp: bool = False
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", timeout=2.0, port=server.port)
    return dns.query.udp(query, "127.0.0.1", timeout=2.0, port=server.port)


def _texts(answer: dns.resolver.Answer) -> list[str]:
    return sorted(rdata.to_text() for rdata in answer)


# -- record types -------------------------------------------------------------------


def test_a_and_aaaa(resolver: dns.resolver.Resolver) -> None:
    answer = resolver.resolve("mx1.example.test", "A")
    assert _texts(answer) == ["127.0.0.1"]
    assert answer.rrset is not None and answer.rrset.ttl == 300
    assert answer.response.flags & dns.flags.AA
    assert _texts(resolver.resolve("mx1.example.test", "AAAA")) == ["::1"]


def test_names_are_case_insensitive(resolver: dns.resolver.Resolver) -> None:
    assert _texts(resolver.resolve("MX1.Example.TEST.", "A")) == ["127.0.0.1"]


def test_mx_relative_targets_use_the_origin(resolver: dns.resolver.Resolver) -> None:
    answer = resolver.resolve("example.test", "MX")
    assert _texts(answer) == ["10 mx1.example.test.", "20 mx2.example.test."]


def test_txt_with_several_strings(resolver: dns.resolver.Resolver) -> None:
    answer = resolver.resolve("example.test", "TXT")
    strings = sorted(tuple(rdata.strings) for rdata in answer)
    assert strings == [(b"part one", b"part two"), (b"v=spf1 include:spf.app.test ~all",)]


def test_srv(resolver: dns.resolver.Resolver) -> None:
    (srv,) = resolver.resolve("_submission._tcp.example.test", "SRV")
    assert (srv.priority, srv.weight, srv.port) == (0, 1, 587)
    assert srv.target.to_text() == "mail.example.test."


def test_per_record_set_ttl(resolver: dns.resolver.Resolver) -> None:
    answer = resolver.resolve("short.example.test", "A")
    assert answer.rrset is not None and answer.rrset.ttl == 60


def test_cname_is_chased(server: FakeDnsServer, resolver: dns.resolver.Resolver) -> None:
    response = _query(server, "alias.example.test", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    chain = [
        (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)) for rrset in response.answer
    ]
    assert chain == [
        ("alias.example.test.", "CNAME"),
        ("www.example.test.", "CNAME"),
        ("example.test.", "MX"),
    ]
    answer = resolver.resolve("alias.example.test", "MX")
    assert answer.canonical_name.to_text() == "example.test."
    assert _texts(answer) == ["10 mx1.example.test.", "20 mx2.example.test."]
    assert _texts(resolver.resolve("www.example.test", "CNAME")) == ["example.test."]


def test_cname_to_a_missing_name_is_nxdomain(server: FakeDnsServer) -> None:
    response = _query(server, "dangling.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_cname_out_of_the_zones_is_answered_alone(server: FakeDnsServer) -> None:
    response = _query(server, "outside.example.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]


def test_ptr_zones_from_text_and_data(server: FakeDnsServer) -> None:
    server.add_zone_text("127.in-addr.arpa", REVERSE_V4)
    server.add_zone(
        dns.reversename.from_address("::1").parent().to_text(),  # 31 x "0." + "ip6.arpa."
        {"1": {"PTR": ["mx1.example.test."]}},
    )
    resolver = server.resolver()
    name = dns.reversename.from_address("127.0.0.1")
    assert _texts(resolver.resolve(name, "PTR")) == ["mx1.example.test."]
    answer = resolver.resolve_address("127.0.0.2")
    assert _texts(answer) == ["mx2.example.test."]
    assert answer.rrset is not None and answer.rrset.ttl == 3600
    assert _texts(resolver.resolve_address("::1")) == ["mx1.example.test."]
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve_address("127.0.0.9")
    # The zone text's own SOA replaced the synthesized one.
    (soa,) = resolver.resolve("127.in-addr.arpa", "SOA")
    assert soa.serial == 7


# -- negative answers -----------------------------------------------------------------


def test_nxdomain_has_soa_in_authority(server: FakeDnsServer) -> None:
    response = _query(server, "nope.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    (soa,) = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name.to_text() == "example.test."
    with pytest.raises(dns.resolver.NXDOMAIN):
        server.resolver().resolve("nope.example.test", "A")


def test_nodata_has_soa_in_authority(server: FakeDnsServer) -> None:
    response = _query(server, "mx1.example.test", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]
    with pytest.raises(dns.resolver.NoAnswer):
        server.resolver().resolve("mx1.example.test", "MX")


def test_empty_non_terminal_is_nodata(server: FakeDnsServer) -> None:
    response = _query(server, "_tcp.example.test", "SRV")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_names_outside_every_zone_are_refused(server: FakeDnsServer) -> None:
    response = _query(server, "example.org", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        server.resolver().resolve("example.org", "A")


def test_synthesized_soa_and_ns(resolver: dns.resolver.Resolver) -> None:
    assert _texts(resolver.resolve("example.test", "NS")) == ["ns.example.test."]
    (soa,) = resolver.resolve("example.test", "SOA")
    assert soa.mname.to_text() == "ns.example.test."


def test_any_answers_every_set_of_the_name(server: FakeDnsServer) -> None:
    response = _query(server, "mx1.example.test", "ANY")
    assert sorted(rrset.rdtype for rrset in response.answer) == [
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
    ]


# -- faults -----------------------------------------------------------------------------


def test_fail_servfail(server: FakeDnsServer, resolver: dns.resolver.Resolver) -> None:
    server.fail("example.test")
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        resolver.resolve("example.test", "MX")
    assert _query(server, "example.test", "TXT").rcode() == dns.rcode.SERVFAIL
    assert _texts(resolver.resolve("mx1.example.test", "A")) == ["127.0.0.1"]
    server.clear_faults()
    assert len(resolver.resolve("example.test", "MX")) == 2


def test_fail_per_type_and_other_rcodes(server: FakeDnsServer) -> None:
    server.fail("mx1.example.test", "REFUSED", rdtype="AAAA")
    assert _query(server, "mx1.example.test", "AAAA").rcode() == dns.rcode.REFUSED
    assert _query(server, "mx1.example.test", "A").rcode() == dns.rcode.NOERROR


def test_nxdomain_fault_hides_an_existing_name(server: FakeDnsServer) -> None:
    server.nxdomain("mx1.example.test")
    response = _query(server, "mx1.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]
    with pytest.raises(dns.resolver.NXDOMAIN):
        server.resolver().resolve("mx1.example.test", "A")


def test_timeout_fault(server: FakeDnsServer) -> None:
    server.timeout("mx1.example.test")
    resolver = server.resolver(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        resolver.resolve("mx1.example.test", "A")
    assert time.monotonic() - started < 2.0
    assert server.count("mx1.example.test", "A") >= 1
    assert _texts(resolver.resolve("mx2.example.test", "A")) == ["127.0.0.2"]


def test_delay_fault(server: FakeDnsServer) -> None:
    server.delay("mx1.example.test", 0.5)
    with pytest.raises(dns.resolver.LifetimeTimeout):
        server.resolver(timeout=0.3).resolve("mx1.example.test", "A")
    started = time.monotonic()
    assert _texts(server.resolver(timeout=2.0).resolve("mx1.example.test", "A")) == ["127.0.0.1"]
    assert 0.45 <= time.monotonic() - started < 2.0


def test_a_delayed_answer_does_not_hold_up_others(server: FakeDnsServer) -> None:
    server.delay("mx1.example.test", 1.0)
    results: list[str] = []
    slow = threading.Thread(
        target=lambda: results.extend(_texts(server.resolver().resolve("mx1.example.test", "A")))
    )
    slow.start()
    try:
        time.sleep(0.05)
        started = time.monotonic()
        assert _texts(server.resolver().resolve("mx2.example.test", "A")) == ["127.0.0.2"]
        assert time.monotonic() - started < 0.5
    finally:
        slow.join(5.0)
    assert results == ["127.0.0.1"]


# -- truncation and TCP -------------------------------------------------------------------


def _add_big_txt(server: FakeDnsServer, count: int = 10) -> None:
    for index in range(count):
        server.add_record("big.example.test", "TXT", f'"{str(index) * 200}"')


def test_large_answers_fall_back_to_tcp(
    server: FakeDnsServer, resolver: dns.resolver.Resolver
) -> None:
    _add_big_txt(server)  # ~2 kB: over 512 and over dnspython's EDNS 1232
    udp = _query(server, "big.example.test", "TXT")
    assert udp.flags & dns.flags.TC
    server.clear_queries()
    answer = resolver.resolve("big.example.test", "TXT")
    assert len(answer) == 10
    assert server.queries == [
        ("big.example.test.", "TXT", "udp"),
        ("big.example.test.", "TXT", "tcp"),
    ]


def test_truncation_honours_the_payload_size(server: FakeDnsServer) -> None:
    _add_big_txt(server, count=3)  # ~630 bytes: too big for 512, fine with EDNS
    resolver = server.resolver()
    resolver.use_edns(-1)
    assert len(resolver.resolve("big.example.test", "TXT")) == 3
    assert server.count("big.example.test", "TXT") == 2
    assert server.queries[-1].transport == "tcp"
    server.clear_queries()
    resolver.use_edns(0, 0, 1232)
    assert len(resolver.resolve("big.example.test", "TXT")) == 3
    assert [query.transport for query in server.queries] == ["udp"]


def test_force_tcp(server: FakeDnsServer, resolver: dns.resolver.Resolver) -> None:
    server.force_tcp = True
    assert _texts(resolver.resolve("mx1.example.test", "A")) == ["127.0.0.1"]
    assert [query.transport for query in server.queries] == ["udp", "tcp"]


def test_several_queries_on_one_tcp_connection(server: FakeDnsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
        for name in ("mx1.example.test", "mx2.example.test", "nope.example.test"):
            query = dns.message.make_query(name, "A")
            response = dns.query.tcp(query, "127.0.0.1", timeout=2.0, sock=sock)
            assert response.id == query.id
        assert response.rcode() == dns.rcode.NXDOMAIN
    assert [query.transport for query in server.queries] == ["tcp"] * 3


def test_malformed_packets_do_not_hurt(server: FakeDnsServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(b"\x00", ("127.0.0.1", server.port))
        sock.sendto(b"\x12\x34" + b"\x00" * 4 + b"\xff" * 20, ("127.0.0.1", server.port))
        reply = dns.message.from_wire(sock.recv(65535))
        assert reply.id == 0x1234
        assert reply.rcode() == dns.rcode.FORMERR
    with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock:
        sock.sendall(b"\x00\x03abc\x00\x00")  # junk, then an empty message
        sock.sendall(b"\xff\xff" + b"\x00" * 10)  # a length it never completes
    assert _texts(server.resolver().resolve("mx1.example.test", "A")) == ["127.0.0.1"]
    assert server.errors == []


# -- runtime changes and the log -------------------------------------------------------


def test_add_and_remove_records_at_runtime(
    server: FakeDnsServer, resolver: dns.resolver.Resolver
) -> None:
    server.add_record("new.example.test", "A", "127.0.0.9", ttl=30)
    server.add_record("new.example.test", "A", "127.0.0.10")
    answer = resolver.resolve("new.example.test", "A")
    assert _texts(answer) == ["127.0.0.10", "127.0.0.9"]
    assert answer.rrset is not None and answer.rrset.ttl == 30
    server.add_record("example.test", "TXT", '"added"')
    assert len(resolver.resolve("example.test", "TXT")) == 3

    assert server.remove_records("mx1.example.test", "AAAA") == 1
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("mx1.example.test", "AAAA")
    assert server.remove_records("new.example.test") == 1
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("new.example.test", "A")
    assert server.remove_records("nothing.example.test") == 0
    with pytest.raises(ValueError, match="none of the zones"):
        server.add_record("host.example.org", "A", "127.0.0.1")


def test_add_record_replaces_a_cname(
    server: FakeDnsServer, resolver: dns.resolver.Resolver
) -> None:
    server.add_record("www.example.test", "CNAME", "mx2.example.test.")
    assert _texts(resolver.resolve("www.example.test", "A")) == ["127.0.0.2"]


def test_runtime_changes_from_another_thread(server: FakeDnsServer) -> None:
    resolver = server.resolver()
    stop = threading.Event()

    def churn() -> None:
        for index in range(200):
            if stop.is_set():
                return
            server.add_record("churn.example.test", "A", f"127.0.1.{index % 250}")
            server.remove_records("churn.example.test")

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(50):
            assert _texts(resolver.resolve("mx2.example.test", "A")) == ["127.0.0.2"]
    finally:
        stop.set()
        worker.join(5.0)
    assert server.errors == []


def test_zone_file_text(server: FakeDnsServer) -> None:
    server.add_zone_text(
        "zone.test",
        """
        $ORIGIN zone.test.
        @      IN MX 5 mail
        mail   IN A  127.0.0.5
        spf 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
        """.replace("        ", ""),
    )
    resolver = server.resolver()
    assert _texts(resolver.resolve("zone.test", "MX")) == ["5 mail.zone.test."]
    assert _texts(resolver.resolve("mail.zone.test", "A")) == ["127.0.0.5"]
    answer = resolver.resolve("spf.zone.test", "TXT")
    assert answer.rrset is not None and answer.rrset.ttl == 60
    assert "zone.test." in server.origins


def test_queries_log_and_count(server: FakeDnsServer, resolver: dns.resolver.Resolver) -> None:
    resolver.resolve("example.test", "MX")
    resolver.resolve("MX1.example.test", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nope.example.test", "TXT")
    assert server.queries == [
        DnsQuery("example.test.", "MX", "udp"),
        DnsQuery("MX1.example.test.", "A", "udp"),
        DnsQuery("nope.example.test.", "TXT", "udp"),
    ]
    assert server.query_count == 3
    assert server.count("mx1.example.test") == 1
    assert server.count(rdtype="txt") == 1
    server.clear_queries()
    assert server.query_count == 0
    assert server.queries == []


# -- lifecycle ------------------------------------------------------------------------------


def _fake_dns_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "FakeDnsServer"]


def test_stop_releases_the_port_and_the_thread() -> None:
    before = len(_fake_dns_threads())
    server = FakeDnsServer(ZONES).start()
    port = server.port
    assert port > 0
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as client:
        dns.query.tcp(dns.message.make_query("example.test", "MX"), "127.0.0.1", sock=client)
        server.stop()
        assert client.recv(1) == b""  # the server closed the open connection
    assert len(_fake_dns_threads()) == before
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
    server.stop()  # a second stop is harmless


def test_start_and_stop_are_fast() -> None:
    started = time.perf_counter()
    for _ in range(20):
        with FakeDnsServer(ZONES) as server:
            assert server.port > 0
    assert (time.perf_counter() - started) / 20 < 0.5
    assert _fake_dns_threads() == []
