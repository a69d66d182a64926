"""pytest fixtures of mailbridge, registered automatically when mailbridge is installed.

Fixtures: `smtp_server`, `imap_server`, `dns_server`, `autoconfig_server`,
`authorization_server` (OAuth2) and `delivery_client` (a `DeliveryClient` wired
to `smtp_server`, and to `imap_server` when the test uses it too). Each is started for one test
and stopped after it. Configure a server with a marker of the same name whose
keyword arguments go to its constructor::

    @pytest.mark.smtp_server(tls="implicit", users={"me@example.test": "pw"})
    def test_something(smtp_server): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from . import import_helper

if TYPE_CHECKING:
    from .._client import DeliveryClient
    from ._autoconfig import FakeAutoconfigServer
    from ._dns import FakeDnsServer
    from ._imap import FakeImapServer
    from ._oauth import FakeAuthorizationServer
    from ._smtp import FakeSmtpServer

__all__ = [
    "FAKE_PASSWORD",
    "FAKE_USER",
    "authorization_server",
    "autoconfig_server",
    "delivery_client",
    "dns_server",
    "imap_server",
    "smtp_server",
]

FAKE_USER = "tenant@example.test"
FAKE_PASSWORD = "fake-password"  # noqa: S105 (a test server's password)

_MARKERS = {
    "smtp_server": "keyword arguments for the FakeSmtpServer of the smtp_server fixture",
    "dns_server": "keyword arguments for the FakeDnsServer of the dns_server fixture",
    "imap_server": "keyword arguments for the FakeImapServer of the imap_server fixture",
    "autoconfig_server": "keyword arguments for the FakeAutoconfigServer fixture",
    "authorization_server": "keyword arguments for the FakeAuthorizationServer fixture",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}(**kwargs): {help_text}")


def _helper(module: str, name: str) -> Any:
    """`name` from `mailbridge.testing.<module>`; fails the test with an install hint."""
    try:
        return getattr(import_helper(module), name)
    except ImportError as exc:
        problem = str(exc)  # failed outside the except block: no chained traceback
    pytest.fail(problem, pytrace=False)


def _options(request: pytest.FixtureRequest, name: str, **defaults: Any) -> dict[str, Any]:
    marker = request.node.get_closest_marker(name)
    options = dict(defaults)
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{name} takes keyword arguments only")
        options.update(marker.kwargs)
    return options


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[FakeSmtpServer]:
    """A `FakeSmtpServer`: STARTTLS, one user `tenant@example.test` / `fake-password`.

    `smtp_server.smtp_settings()` gives matching `SmtpSettings`;
    `smtp_server.messages` holds what arrived.
    """
    options = _options(request, "smtp_server", users={FAKE_USER: FAKE_PASSWORD})
    with _helper("_smtp", "FakeSmtpServer")(**options) as server:
        yield server


@pytest.fixture
def imap_server(request: pytest.FixtureRequest) -> Iterator[FakeImapServer]:
    """A `FakeImapServer`: implicit TLS, the same user, English special-use folders.

    `imap_server.imap_settings()` gives matching `ImapSettings`.
    """
    options = _options(request, "imap_server", users={FAKE_USER: FAKE_PASSWORD})
    with _helper("_imap", "FakeImapServer")(**options) as server:
        yield server


@pytest.fixture
def dns_server(request: pytest.FixtureRequest) -> Iterator[FakeDnsServer]:
    """A `FakeDnsServer` (zones from the marker, e.g. `zones={...}`); `dns_server.resolver()`."""
    with _helper("_dns", "FakeDnsServer")(**_options(request, "dns_server")) as server:
        yield server


@pytest.fixture
def autoconfig_server(request: pytest.FixtureRequest) -> Iterator[FakeAutoconfigServer]:
    """A `FakeAutoconfigServer` over HTTPS; add documents with `add_config()`."""
    with _helper("_autoconfig", "FakeAutoconfigServer")(
        **_options(request, "autoconfig_server")
    ) as server:
        yield server


@pytest.fixture
def authorization_server(request: pytest.FixtureRequest) -> Iterator[FakeAuthorizationServer]:
    """A `FakeAuthorizationServer` (OAuth2 over HTTPS) whose one user is `tenant@example.test`.

    Give it to `FakeSmtpServer(authorization_server=...)` (e.g. through the `smtp_server`
    marker) to accept the access tokens it issues.
    """
    options = _options(request, "authorization_server", users=(FAKE_USER,))
    with _helper("_oauth", "FakeAuthorizationServer")(**options) as server:
        yield server


@pytest.fixture
def delivery_client(
    request: pytest.FixtureRequest, smtp_server: FakeSmtpServer
) -> Iterator[DeliveryClient]:
    """`DeliveryClient.own_smtp()` for `tenant@example.test`, sending through `smtp_server`.

    When the test also uses `imap_server`, the client's IMAP settings point to it.
    """
    from .._client import DeliveryClient

    imap = None
    if "imap_server" in request.fixturenames:
        imap = request.getfixturevalue("imap_server").imap_settings()
    with DeliveryClient.own_smtp(
        FAKE_USER, smtp_server.smtp_settings(), display_name="Tenant GmbH", imap=imap
    ) as client:
        yield client
