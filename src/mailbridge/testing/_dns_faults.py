"""The fault tables of `FakeDnsServer`: keys by name and type, and look-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias, TypeVar

import dns.name
import dns.rdatatype

_FaultKey: TypeAlias = tuple[dns.name.Name, dns.rdatatype.RdataType | None]
_T = TypeVar("_T")


def _key(name: str, rdtype: str | None) -> _FaultKey:
    return (dns.name.from_text(name), None if rdtype is None else dns.rdatatype.from_text(rdtype))


def _fault(faults: Mapping[_FaultKey, _T], key: _FaultKey) -> _T | None:
    """The fault for (name, type), else for (name, any type)."""
    found = faults.get(key)
    return faults.get((key[0], None)) if found is None else found


def _has_fault(faults: set[_FaultKey], key: _FaultKey) -> bool:
    return key in faults or (key[0], None) in faults
