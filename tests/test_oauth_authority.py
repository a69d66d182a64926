"""Personal Outlook.com / Hotmail accounts sign in: the Microsoft authority follows the
account's provider (`consumers`, `organizations`, `common`) unless the application sets one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailbridge.errors import OAuthError
from mailbridge.oauth import MemoryTokenStore
from mailbridge.oauth.microsoft import MicrosoftOAuth
from mailbridge.providers import ProviderRegistry
from mailbridge.testing import FakeAuthorizationServer

PERSONAL = "pat@outlook.com"
WORK = "alice@contoso.example"
REDIRECT = "https://app.example.test/oauth/microsoft"
pytestmark = pytest.mark.filterwarnings("ignore:response_mode='form_post':UserWarning")


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(WORK,), personal_users=(PERSONAL, "sam@hotmail.com")) as s:
        yield s


def client(auth: FakeAuthorizationServer, **options: object) -> MicrosoftOAuth:
    return MicrosoftOAuth(
        auth.public_client_id,
        store=MemoryTokenStore(),
        instance=auth.url,  # real life: leave it (https://login.microsoftonline.com)
        instance_discovery=False,
        ca_file=auth.ca_file,
        **options,  # type: ignore[arg-type]
    )


def test_the_registry_chooses_the_audience_and_an_explicit_authority_wins(
    auth: FakeAuthorizationServer,
) -> None:
    ms = client(auth)
    assert ms.authority_for("pat@outlook.com") == f"{auth.url}/consumers"
    assert ms.authority_for("Sam@Hotmail.com") == f"{auth.url}/consumers"
    assert ms.authority_for(WORK) == f"{auth.url}/common"  # a domain nobody listed: both kinds
    assert ms.authority_for(None) == f"{auth.url}/common"
    outlook = ProviderRegistry.default().by_domain("outlook.com")
    assert outlook is not None and outlook.oauth2 is not None
    assert outlook.oauth2.authority == "https://login.microsoftonline.com/consumers"
    fixed = client(auth, authority=auth.authority("contoso-tenant-id"))
    assert fixed.authority_for(PERSONAL) == f"{auth.url}/contoso-tenant-id"


def test_a_personal_account_cannot_sign_in_through_organizations(
    auth: FakeAuthorizationServer,
) -> None:
    ms = client(auth, authority=auth.authority("organizations"))  # the old default
    code = ms.start_device_flow()
    auth.approve_device_code(code.user_code, user=PERSONAL)
    with pytest.raises(OAuthError) as caught:
        ms.finish_device_flow("pat", code, timeout=10)
    assert 500200 in caught.value.error_codes


def test_a_personal_account_signs_in_and_renews_through_consumers(
    auth: FakeAuthorizationServer,
) -> None:
    ms = client(auth)
    code = ms.start_device_flow(email=PERSONAL)
    auth.approve_device_code(code.user_code, user=PERSONAL)
    assert ms.finish_device_flow("pat", code, timeout=10) == PERSONAL
    provider = ms.token_provider("pat")  # no user name: the cached account's decides
    first = provider.token()
    provider.invalidate()
    second = provider.token()  # a refresh
    assert first != second and auth.accepts(PERSONAL, second) and auth.refreshes >= 1
    assert set(auth.token_tenants) == {"consumers"}


def test_the_web_flow_uses_the_login_hints_audience(auth: FakeAuthorizationServer) -> None:
    ms = client(auth)
    request = ms.authorization_request(REDIRECT, login_hint="sam@hotmail.com")
    assert request.url.startswith(f"{auth.url}/consumers/")
    callback = auth.sign_in(request.url, user="sam@hotmail.com")
    query = dict(part.split("=", 1) for part in callback.split("?", 1)[1].split("&"))
    assert ms.finish_authorization("sam", request, query) == "sam@hotmail.com"
    assert auth.token_tenants == ["consumers"]


def test_an_unknown_account_signs_in_through_common_whichever_kind_it_is(
    auth: FakeAuthorizationServer,
) -> None:
    ms = client(auth)
    for tenant, user in (("work", WORK), ("pat", PERSONAL)):
        code = ms.start_device_flow()
        auth.approve_device_code(code.user_code, user=user)
        assert ms.finish_device_flow(tenant, code, timeout=10) == user
    work, pat = ms.token_provider("work", WORK), ms.token_provider("pat")
    for provider in (work, pat):
        provider.token()
        provider.invalidate()
        provider.token()
    # Sign-ins through common; renewals: common for the unknown domain, consumers for Outlook.
    assert auth.token_tenants[:2] == ["common", "common"] and "consumers" in auth.token_tenants
