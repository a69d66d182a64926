"""`FakeDnsServer`: an authoritative DNS server (dnspython) on loopback, with faults on demand."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeAlias

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.zone

from ._dns_faults import _fault, _FaultKey, _has_fault, _key
from ._dns_transport import _bind_pair, _format_error, _TcpProtocol, _UdpProtocol
from ._dns_zone import _add_answer, _add_soa, _rdataset, _Zone
from ._loop import STOP_TIMEOUT, start_loop_thread, stop_loop_thread

__all__ = ["DnsQuery", "FakeDnsServer"]

MAX_CNAME_CHAIN = 8
DEFAULT_TTL = 300

RecordValues: TypeAlias = str | Sequence[str] | tuple[int, str | Sequence[str]]
"""One record set: a value, a list of values, or `(ttl, values)`; zone-file text form."""
ZoneRecords: TypeAlias = Mapping[str, Mapping[str, RecordValues]]
"""Owner name (relative to the origin, "@" for the apex, or absolute) -> type -> values."""


class DnsQuery(NamedTuple):
    """One query as received: owner name (as sent, absolute), type mnemonic, "udp"/"tcp"."""

    name: str
    rdtype: str
    transport: str


class FakeDnsServer:
    """An authoritative DNS server on one free loopback port (UDP and TCP), in a thread.

    Zones come from Python data (`zones`, `add_zone()`) or zone-file text
    (`add_zone_text()`); record values are in zone-file text form and a zone
    without SOA/NS gets synthesized ones. `add_record()` and `remove_records()`
    change DNS while a test runs. Names outside every zone are REFUSED; CNAMEs
    are chased within the served zones; UDP answers larger than the client's
    payload size are truncated (TC) so clients retry over TCP. Every query is
    logged in `queries`. Faults (per name, optionally per type) are in the
    `failures`, `timeouts` and `delays` attributes, set with `fail()`,
    `nxdomain()`, `timeout()` and `delay()`; `force_tcp` truncates every UDP
    answer. Use `resolver()` for a dnspython resolver that asks only this server.
    """

    def __init__(
        self,
        zones: Mapping[str, ZoneRecords] | None = None,
        *,
        ttl: int = DEFAULT_TTL,
        host: str = "127.0.0.1",
    ) -> None:
        self.ttl = ttl
        self.host = host
        self.port = 0
        self.queries: list[DnsQuery] = []
        self.errors: list[Exception] = []  # internal errors, each answered SERVFAIL
        # Faults: set them before or while a test runs.
        self.failures: dict[_FaultKey, dns.rcode.Rcode] = {}
        self.timeouts: set[_FaultKey] = set()
        self.delays: dict[_FaultKey, float] = {}
        self.force_tcp = False

        self._lock = threading.RLock()
        self._zones: dict[dns.name.Name, _Zone] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tcp_transports: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        for origin, records in (zones or {}).items():
            self.add_zone(origin, records)

    # -- zones and records -----------------------------------------------------------

    @property
    def origins(self) -> list[str]:
        """The served zones' origins, as absolute names."""
        with self._lock:
            return [origin.to_text() for origin in self._zones]

    def add_zone(
        self, origin: str, records: ZoneRecords | None = None, *, ttl: int | None = None
    ) -> None:
        """Serve (or extend) the zone `origin` with `records` (see `ZoneRecords`)."""
        zone_origin = dns.name.from_text(origin)
        default_ttl = self.ttl if ttl is None else ttl
        parsed: list[tuple[dns.name.Name, dns.rdataset.Rdataset]] = []
        for owner, types in (records or {}).items():
            name = dns.name.from_text(owner, zone_origin)
            if not name.is_subdomain(zone_origin):
                raise ValueError(f"{name} is not in the zone {zone_origin}")
            for rdtype, values in types.items():
                rdataset = _rdataset(rdtype, values, default_ttl, zone_origin)
                parsed.append((name, rdataset))
        with self._lock:
            zone = self._zone(zone_origin)
            for name, rdataset in parsed:
                zone.add(name, rdataset)

    def add_zone_text(self, origin: str, text: str, *, ttl: int | None = None) -> None:
        """Serve (or extend) the zone `origin` from zone-file text ($TTL defaults to `ttl`)."""
        default_ttl = self.ttl if ttl is None else ttl
        parsed = dns.zone.from_text(
            f"$TTL {default_ttl}\n{text}", origin=origin, relativize=False, check_origin=False
        )
        assert parsed.origin is not None
        with self._lock:
            zone = self._zone(parsed.origin)
            for name, node in parsed.nodes.items():
                for rdataset in node.rdatasets:
                    zone.add(name, rdataset)

    def add_record(self, name: str, rdtype: str, value: str, ttl: int | None = None) -> None:
        """Add one record (zone-file text) to the zone holding the absolute `name`."""
        owner = dns.name.from_text(name)
        with self._lock:
            zone = self._find_zone(owner)
            if zone is None:
                raise ValueError(f"{owner} is in none of the zones {self.origins}")
            rdataset = _rdataset(rdtype, value, self.ttl if ttl is None else ttl, zone.origin)
            zone.add(owner, rdataset)

    def remove_records(self, name: str, rdtype: str | None = None) -> int:
        """Remove the records of `name` (only type `rdtype` if given); returns the sets removed."""
        owner = dns.name.from_text(name)
        with self._lock:
            zone = self._find_zone(owner)
            node = None if zone is None else zone.nodes.get(owner)
            if zone is None or node is None:
                return 0
            if rdtype is None:
                del zone.nodes[owner]
                return len(node)
            removed = node.pop(dns.rdatatype.from_text(rdtype), None)
            if not node:
                del zone.nodes[owner]
            return 0 if removed is None else 1

    def _zone(self, origin: dns.name.Name) -> _Zone:
        """The zone `origin`, created with a synthesized SOA and NS if new."""
        zone = self._zones.get(origin)
        if zone is None:
            zone = self._zones[origin] = _Zone(origin)
            ns = dns.name.from_text("ns", origin).to_text()
            mbox = dns.name.from_text("hostmaster", origin).to_text()
            soa = f"{ns} {mbox} 1 3600 600 86400 {self.ttl}"
            zone.add(origin, _rdataset("SOA", soa, self.ttl, origin))
            zone.add(origin, _rdataset("NS", ns, self.ttl, origin))
        return zone

    def _find_zone(self, name: dns.name.Name) -> _Zone | None:
        """The most specific served zone that contains `name`."""
        best: _Zone | None = None
        for origin, zone in self._zones.items():
            if name.is_subdomain(origin) and (best is None or len(origin) > len(best.origin)):
                best = zone
        return best

    # -- faults and the query log -------------------------------------------------------

    def fail(self, name: str, rcode: str = "SERVFAIL", rdtype: str | None = None) -> None:
        """Answer queries for `name` (of type `rdtype`, default any) with `rcode`."""
        self.failures[_key(name, rdtype)] = dns.rcode.from_text(rcode)

    def nxdomain(self, name: str, rdtype: str | None = None) -> None:
        """Answer NXDOMAIN (with the zone's SOA) for `name`, whatever it holds."""
        self.fail(name, "NXDOMAIN", rdtype)

    def timeout(self, name: str, rdtype: str | None = None) -> None:
        """Never answer queries for `name`: the client times out."""
        self.timeouts.add(_key(name, rdtype))

    def delay(self, name: str, seconds: float, rdtype: str | None = None) -> None:
        """Answer queries for `name` only after `seconds`."""
        self.delays[_key(name, rdtype)] = seconds

    def clear_faults(self) -> None:
        """Remove every fault."""
        self.failures.clear()
        self.timeouts.clear()
        self.delays.clear()
        self.force_tcp = False

    @property
    def query_count(self) -> int:
        """How many queries arrived since the start or the last `clear_queries()`."""
        return len(self.queries)

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """How many logged queries match `name` (any case) and/or `rdtype`."""
        owner = None if name is None else dns.name.from_text(name)
        return sum(
            1
            for query in self.queries
            if (owner is None or dns.name.from_text(query.name) == owner)
            and (rdtype is None or query.rdtype == rdtype.upper())
        )

    def clear_queries(self) -> None:
        """Empty the query log (and so reset `query_count`)."""
        with self._lock:
            self.queries.clear()

    def resolver(self, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver asking only this server: no search list, no cache."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.port = self.port
        resolver.nameservers = [self.host]
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.search = []
        resolver.use_search_by_default = False
        resolver.cache = None
        return resolver

    # -- answering ----------------------------------------------------------------------

    def _dispatch(self, wire: bytes, transport: str, send: Callable[[bytes], None]) -> None:
        """Parse one query and answer it through `send` (now, later or never)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            reply = _format_error(wire)
            if reply is not None:
                send(reply)
            return
        if query.flags & dns.flags.QR:
            return  # a response: never answer those
        key: _FaultKey | None = None
        if len(query.question) == 1:
            question = query.question[0]
            key = (question.name, question.rdtype)
            with self._lock:
                self.queries.append(
                    DnsQuery(
                        question.name.to_text(), dns.rdatatype.to_text(question.rdtype), transport
                    )
                )
        seconds = 0.0 if key is None else _fault(self.delays, key) or 0.0
        if seconds > 0 and self._loop is not None:
            task = self._loop.create_task(self._answer_later(seconds, query, transport, send))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._send_answer(query, transport, send)

    async def _answer_later(
        self,
        seconds: float,
        query: dns.message.Message,
        transport: str,
        send: Callable[[bytes], None],
    ) -> None:
        await asyncio.sleep(seconds)
        self._send_answer(query, transport, send)

    def _send_answer(
        self, query: dns.message.Message, transport: str, send: Callable[[bytes], None]
    ) -> None:
        if len(query.question) == 1:
            question = query.question[0]
            if _has_fault(self.timeouts, (question.name, question.rdtype)):
                return
        try:
            response = self._answer(query)
        except Exception as error:
            self.errors.append(error)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
        if transport == "tcp":
            send(response.to_wire(max_size=65535, prefer_truncation=True))
            return
        max_size = max(512, query.payload) if query.edns >= 0 else 512
        if self.force_tcp:
            response.answer, response.authority, response.additional = [], [], []
            response.flags |= dns.flags.TC
        send(response.to_wire(max_size=max_size, prefer_truncation=True))

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._lock:
            zone = self._find_zone(qname)
            rcode = _fault(self.failures, (qname, qtype))
            if rcode is not None:
                response.set_rcode(rcode)
                if rcode == dns.rcode.NXDOMAIN and zone is not None:
                    response.flags |= dns.flags.AA
                    _add_soa(response, zone)
                return response
            if (
                zone is None
                or question.rdclass != dns.rdataclass.IN
                or (dns.rdatatype.is_metatype(qtype) and qtype != dns.rdatatype.ANY)
            ):
                response.set_rcode(dns.rcode.REFUSED)
                return response
            response.flags |= dns.flags.AA
            self._resolve(response, zone, qname, qtype)
        return response

    def _resolve(
        self,
        response: dns.message.Message,
        zone: _Zone,
        qname: dns.name.Name,
        qtype: dns.rdatatype.RdataType,
    ) -> None:
        """Fill the answer for `qname`, chasing CNAMEs within the served zones."""
        name, seen = qname, {qname}
        for _ in range(MAX_CNAME_CHAIN):
            node = zone.nodes.get(name)
            if node is None:
                if not zone.exists(name):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                _add_soa(response, zone)
                return
            if qtype == dns.rdatatype.ANY:
                for rdataset in node.values():
                    _add_answer(response, name, rdataset)
                return
            found = node.get(qtype)
            if found is not None:
                _add_answer(response, name, found)
                return
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                _add_soa(response, zone)  # NODATA
                return
            _add_answer(response, name, cname)
            target: dns.name.Name = next(iter(cname)).target
            next_zone = self._find_zone(target)
            if next_zone is None or target in seen:
                return  # out of our zones (or a loop): the client goes on alone
            name, zone = target, next_zone
            seen.add(target)

    # -- running ----------------------------------------------------------------------

    def start(self) -> FakeDnsServer:
        """Start listening; returns self. `port` is set afterwards."""
        if self._thread is not None:
            return self
        try:
            self._start_thread()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_thread(self) -> None:
        udp, tcp = _bind_pair(self.host)
        loop, thread = start_loop_thread("FakeDnsServer")
        self._loop, self._thread = loop, thread

        async def listen() -> None:
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), sock=udp
                )
            except BaseException:
                udp.close()
                tcp.close()
                raise
            try:
                self._tcp = await loop.create_server(lambda: _TcpProtocol(self), sock=tcp)
            except BaseException:
                tcp.close()
                raise

        asyncio.run_coroutine_threadsafe(listen(), loop).result(STOP_TIMEOUT)
        self.port = udp.getsockname()[1]

    def stop(self) -> None:
        """Close both sockets and every connection, and stop the thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:

            def close() -> None:
                if self._udp is not None:
                    self._udp.close()
                if self._tcp is not None:
                    self._tcp.close()
                for transport in list(self._tcp_transports):
                    transport.close()

            stop_loop_thread(loop, thread, close)
        self._loop = self._thread = self._udp = self._tcp = None
        self._tcp_transports.clear()

    def __enter__(self) -> FakeDnsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
