"""Recognising documents by content: PDF and XML e-invoices (UBL, UN/CEFACT CII)."""

from __future__ import annotations

import enum
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

__all__ = ["DocumentKind", "detect_kind"]

MAX_XML_BYTES = 20 * 1024 * 1024

_UBL = "urn:oasis:names:specification:ubl:schema:xsd:"
_CII = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"


class DocumentKind(enum.StrEnum):
    """What an imported attachment is, decided from its bytes (not its file name)."""

    PDF = "pdf"
    UBL_INVOICE = "ubl_invoice"  # OASIS UBL 2.x Invoice (XRechnung UBL, Peppol BIS)
    UBL_CREDIT_NOTE = "ubl_credit_note"
    CII = "cii"  # UN/CEFACT Cross Industry Invoice (ZUGFeRD, Factur-X, XRechnung CII)
    XML = "xml"  # other XML: kept, but not an e-invoice


def _root_tag(content: bytes) -> str | None:
    if len(content) > MAX_XML_BYTES:
        return None
    try:
        root = SafeET.fromstring(content, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError):
        return None
    return str(root.tag)


def detect_kind(content: bytes) -> DocumentKind | None:
    """The kind of document in `content`, or None when it is neither PDF nor XML.

    XML is parsed with defusedxml (no DTDs, no entities): attachments are
    untrusted input.
    """
    head = content[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"%PDF-") or b"%PDF-" in content[:1024]:
        return DocumentKind.PDF
    if not head.startswith(b"<"):
        return None
    tag = _root_tag(content)
    if tag is None:
        return None
    if tag == f"{{{_UBL}Invoice-2}}Invoice":
        return DocumentKind.UBL_INVOICE
    if tag == f"{{{_UBL}CreditNote-2}}CreditNote":
        return DocumentKind.UBL_CREDIT_NOTE
    if tag == f"{{{_CII}}}CrossIndustryInvoice":
        return DocumentKind.CII
    return DocumentKind.XML
