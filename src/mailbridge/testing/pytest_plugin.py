"""pytest fixtures of mailbridge, registered automatically when mailbridge is installed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .smtp import FakeSmtpServer

FAKE_USER = "tenant@example.test"
FAKE_PASSWORD = "fake-password"  # noqa: S105 (a test server's password)


@pytest.fixture
def fake_smtp() -> Iterator[FakeSmtpServer]:
    """A `FakeSmtpServer` with STARTTLS and one user, `tenant@example.test` / `fake-password`.

    `fake_smtp.settings()` gives matching `SmtpSettings`; `fake_smtp.messages`
    holds what arrived. Stopped after the test.
    """
    from .smtp import FakeSmtpServer

    with FakeSmtpServer(users={FAKE_USER: FAKE_PASSWORD}) as server:
        yield server
