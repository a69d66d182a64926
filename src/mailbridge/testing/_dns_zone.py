"""The served zones of `FakeDnsServer`: record sets by owner name, and copying them into answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset

if TYPE_CHECKING:
    from ._dns import RecordValues


_Node: TypeAlias = dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset]
_SINGLETONS = (dns.rdatatype.SOA, dns.rdatatype.CNAME)


class _Zone:
    """The record sets of one served zone, keyed by absolute owner name."""

    def __init__(self, origin: dns.name.Name) -> None:
        self.origin = origin
        self.nodes: dict[dns.name.Name, _Node] = {}

    def add(self, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        """Add `rdataset` at `name`: merged with the existing set, or replacing SOA/CNAME."""
        node = self.nodes.setdefault(name, {})
        existing = node.get(rdataset.rdtype)
        rdatas = list(rdataset)
        ttl = rdataset.ttl
        if existing is not None and rdataset.rdtype not in _SINGLETONS:
            rdatas = [*existing, *rdatas]
            ttl = min(ttl, existing.ttl)
        node[rdataset.rdtype] = dns.rdataset.from_rdata_list(ttl, rdatas)

    def exists(self, name: dns.name.Name) -> bool:
        """Whether `name` owns records or is an empty non-terminal."""
        return name in self.nodes or any(owner.is_subdomain(name) for owner in self.nodes)

    def soa(self) -> dns.rrset.RRset | None:
        rdataset = self.nodes.get(self.origin, {}).get(dns.rdatatype.SOA)
        if rdataset is None:
            return None
        minimum = min(getattr(rdata, "minimum", rdataset.ttl) for rdata in rdataset)
        # RFC 2308: a negative answer's SOA has the smaller of its TTL and MINIMUM.
        return dns.rrset.from_rdata_list(self.origin, min(rdataset.ttl, minimum), list(rdataset))


def _rdataset(
    rdtype: str, values: RecordValues, ttl: int, origin: dns.name.Name
) -> dns.rdataset.Rdataset:
    if isinstance(values, tuple) and values and isinstance(values[0], int):
        ttl, values = values[0], values[1]
    texts = [values] if isinstance(values, str) else [str(value) for value in values]
    rdatas = [
        dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text, origin, relativize=False
        )
        for text in texts
    ]
    if not rdatas:
        raise ValueError(f"no {rdtype} values given")
    return dns.rdataset.from_rdata_list(ttl, rdatas)


def _add_answer(
    response: dns.message.Message, name: dns.name.Name, rdataset: dns.rdataset.Rdataset
) -> None:
    response.answer.append(dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset)))


def _add_soa(response: dns.message.Message, zone: _Zone) -> None:
    soa = zone.soa()
    if soa is not None:
        response.authority.append(soa)
