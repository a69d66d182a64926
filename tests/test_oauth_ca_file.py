"""`ca_file` is checked when an adapter is made; OS errors on the way are typed, host only."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbridge.errors import ConfigurationError, OAuthError
from mailbridge.oauth import MemoryTokenStore
from mailbridge.oauth.google import GoogleOAuth
from mailbridge.oauth.microsoft import MicrosoftOAuth
from mailbridge.testing import FakeAuthorizationServer

USER = "dana@example.test"


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(USER,)) as server:
        yield server


def microsoft(auth: FakeAuthorizationServer, ca_file: Any) -> MicrosoftOAuth:
    return MicrosoftOAuth(
        auth.public_client_id,
        store=MemoryTokenStore(),
        authority=auth.authority(),
        instance_discovery=False,
        ca_file=ca_file,
    )


def google(auth: FakeAuthorizationServer, ca_file: Any, config: Any = None) -> GoogleOAuth:
    return GoogleOAuth(
        config or auth.google_client_config("web"), store=MemoryTokenStore(), ca_file=ca_file
    )


@pytest.mark.parametrize("make", [microsoft, google])
@pytest.mark.parametrize("problem", ["missing", "not pem", "directory"])
def test_an_unusable_ca_file_is_a_configuration_error_at_construction(
    auth: FakeAuthorizationServer, tmp_path: Path, make: Any, problem: str
) -> None:
    path = tmp_path / "ca.pem"
    if problem == "not pem":
        path.write_text("this is no certificate\n")
    elif problem == "directory":
        path.mkdir()
    with pytest.raises(ConfigurationError) as caught:
        make(auth, path)
    assert caught.value.field == "ca_file" and str(path) in str(caught.value)


def test_a_ca_file_gone_after_construction_is_a_temporary_error_naming_the_host(
    auth: FakeAuthorizationServer, tmp_path: Path
) -> None:
    path = tmp_path / "ca.pem"
    shutil.copy(auth.ca_file, path)
    ms = microsoft(auth, path)
    path.unlink()
    with pytest.raises(OAuthError) as caught:
        ms.start_device_flow()
    assert caught.value.temporary and auth.host in str(caught.value)
    assert "OSError" in str(caught.value) or "Error" in str(caught.value)


def test_google_names_the_token_host_not_its_url(
    auth: FakeAuthorizationServer, tmp_path: Path
) -> None:
    path = tmp_path / "ca.pem"
    shutil.copy(auth.ca_file, path)
    config = auth.google_client_config("web")
    config["web"]["token_uri"] += "?key=very-secret-api-key"
    g = google(auth, path, config)
    g.store.save("acme", '{"token": null, "refresh_token": "rt", "expiry": null}')
    path.unlink()
    started = time.monotonic()
    with pytest.raises(OAuthError) as caught:
        g.token_provider("acme").token()
    message = str(caught.value)
    assert caught.value.temporary and auth.host in message
    assert "very-secret" not in message and "token_uri" not in message
    assert time.monotonic() - started < 10
