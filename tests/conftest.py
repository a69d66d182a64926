"""Shared fixtures: fake servers in-process, the real Postfix + Dovecot pair for marked tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.testing import FakeSmtpServer

USER = "tenant@example.test"
PASSWORD = "S3cret-Pa55word!"

# A minimal, valid one-page PDF, as an invoicing application would attach.
INVOICE_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@pytest.fixture(autouse=True)
def _quiet_aiosmtpd() -> None:
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)


@pytest.fixture
def smtp_server() -> Iterator[FakeSmtpServer]:
    """STARTTLS, AUTH required, one user."""
    with FakeSmtpServer(users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture
def invoice_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "Invoice 2026-001.pdf"
    path.write_bytes(INVOICE_PDF)
    return path
