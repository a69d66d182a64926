"""FakeAuthorizationServer's endpoints on the wire, and the fakes honouring token expiry."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from mailbridge.testing import FakeAuthorizationServer, FakeImapServer, FakeSmtpServer

USER = "alice@example.test"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(USER, "eve@example.test")) as server:
        yield server


def post(auth: FakeAuthorizationServer, path: str, **form: str) -> requests.Response:
    return requests.post(f"{auth.url}{path}", data=form, verify=str(auth.ca_file), timeout=10)


def code_for(auth: FakeAuthorizationServer, verifier: str = "v" * 50, **extra: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "client_id": auth.public_client_id,
        "redirect_uri": "http://127.0.0.1:9/cb",
        "response_type": "code",
        "scope": "https://outlook.office.com/SMTP.Send offline_access",
        "state": "s1",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        **extra,
    }
    location = auth.sign_in(f"{auth.authority()}/oauth2/v2.0/authorize?{urlencode(query)}")
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == ["s1"]
    return params["code"][0]


def redeem(auth: FakeAuthorizationServer, code: str, verifier: str = "v" * 50) -> requests.Response:
    return post(
        auth,
        "/organizations/oauth2/v2.0/token",
        grant_type="authorization_code",
        client_id=auth.public_client_id,
        code=code,
        redirect_uri="http://127.0.0.1:9/cb",
        code_verifier=verifier,
    )


def test_openid_configuration_in_the_microsoft_layout(auth: FakeAuthorizationServer) -> None:
    url = f"{auth.authority('contoso.example')}/v2.0/.well-known/openid-configuration"
    config = requests.get(url, verify=str(auth.ca_file), timeout=10).json()
    assert config["token_endpoint"] == f"{auth.url}/contoso.example/oauth2/v2.0/token"
    assert config["device_authorization_endpoint"].endswith("/oauth2/v2.0/devicecode")
    with pytest.raises(requests.exceptions.SSLError):  # only with the test CA
        requests.get(url, timeout=10)


def test_codes_are_single_use_and_bound_to_the_pkce_verifier(
    auth: FakeAuthorizationServer,
) -> None:
    assert redeem(auth, code_for(auth), verifier="w" * 50).json()["error"] == "invalid_grant"
    code = code_for(auth)
    first = redeem(auth, code).json()
    assert first["token_type"] == "Bearer" and auth.accepts(USER, first["access_token"])
    assert not auth.accepts("eve@example.test", first["access_token"])
    assert redeem(auth, code).json()["error"] == "invalid_grant"


def test_refresh_rotates_and_the_old_refresh_token_dies(auth: FakeAuthorizationServer) -> None:
    tokens = redeem(auth, code_for(auth)).json()

    def refresh(token: str) -> requests.Response:
        return post(
            auth,
            "/organizations/oauth2/v2.0/token",
            grant_type="refresh_token",
            client_id=auth.public_client_id,
            refresh_token=token,
        )

    renewed = refresh(tokens["refresh_token"]).json()
    assert renewed["refresh_token"] != tokens["refresh_token"] and auth.refreshes == 1
    reused = refresh(tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert reused.json()["error_codes"] == [70008]


def test_device_code_pending_slow_down_and_expiry(auth: FakeAuthorizationServer) -> None:
    device = post(
        auth, "/organizations/oauth2/v2.0/devicecode", client_id=auth.public_client_id, scope="x"
    ).json()

    def poll() -> dict[str, str]:
        return post(
            auth,
            "/organizations/oauth2/v2.0/token",
            grant_type=DEVICE,
            client_id=auth.public_client_id,
            device_code=device["device_code"],
        ).json()

    assert poll()["error"] == "authorization_pending"
    assert poll()["error"] == "slow_down"  # polled again within the interval
    auth.advance_clock(901)
    assert poll()["error"] == "expired_token"


def test_a_confidential_client_must_authenticate(auth: FakeAuthorizationServer) -> None:
    answer = post(
        auth,
        "/google/token",
        grant_type="refresh_token",
        client_id=auth.client_id,
        client_secret="wrong",
        refresh_token="x",
    )
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


def test_the_fake_mail_servers_honour_expiry(auth: FakeAuthorizationServer) -> None:
    token = redeem(auth, code_for(auth)).json()["access_token"]
    with (
        FakeSmtpServer(authorization_server=auth) as smtp,
        FakeImapServer(users={}, authorization_server=auth) as imap,
    ):
        from mailbridge.errors import AuthenticationError
        from mailbridge.imap._connection import close_imap, open_imap
        from mailbridge.smtp import SmtpConnection

        SmtpConnection.open(smtp.smtp_settings(username=USER, oauth2_token=lambda: token)).close()
        close_imap(open_imap(imap.imap_settings(username=USER, oauth2_token=lambda: token)))
        auth.advance_clock(3601)
        with pytest.raises(AuthenticationError):
            SmtpConnection.open(smtp.smtp_settings(username=USER, oauth2_token=lambda: token))
        with pytest.raises(AuthenticationError):
            open_imap(imap.imap_settings(username=USER, oauth2_token=lambda: token))
        assert smtp.oauth_refused == 1 and imap.oauth_refused == 1
