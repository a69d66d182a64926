"""A token endpoint that is down costs one time-out, not one per connection (the circuit),
and a cached access token that has not expired keeps sending meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mailbridge.diagnosis import Category, Diagnosis
from mailbridge.errors import OAuthError, OAuthGrantInvalid, OAuthUnavailable
from mailbridge.oauth import AccessToken, CachingTokenProvider, MemoryTokenStore
from mailbridge.oauth import _provider as provider_module
from mailbridge.oauth._circuit import Circuits
from mailbridge.oauth.google import GoogleOAuth
from mailbridge.oauth.microsoft import MicrosoftOAuth
from mailbridge.testing import FakeAuthorizationServer

USER = "erin@example.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# -- the circuit ------------------------------------------------------------------------------


def test_the_window_grows_per_failure_up_to_its_maximum_and_a_success_closes_it() -> None:
    clock = Clock()
    circuits = Circuits("microsoft", (1.0, 4.0), clock)
    circuits.before("login.example:443")  # closed: nothing raised
    windows = []
    for _ in range(5):
        retry_at = circuits.failed("login.example:443")
        windows.append(retry_at - clock.now)
        with pytest.raises(OAuthUnavailable) as caught:
            circuits.before("login.example:443")
        assert caught.value.temporary and caught.value.retry_at == retry_at
        assert "login.example" in str(caught.value) and "asked again at" in str(caught.value)
        circuits.before("other.example:443")  # another endpoint is not affected
        clock.now = retry_at
    assert windows == [1.0, 2.0, 4.0, 4.0, 4.0]
    circuits.succeeded("login.example:443")
    circuits.before("login.example:443")


def test_after_the_window_one_caller_probes_while_the_others_still_fail_fast() -> None:
    clock = Clock()
    circuits = Circuits("google", (1.0, 60.0), clock)
    circuits.failed("oauth2.example:443")
    clock.now += 1.5
    passed, refused = [], []
    barrier = threading.Barrier(8)

    def caller() -> None:
        barrier.wait(5)
        try:
            circuits.before("oauth2.example:443")
            passed.append(1)
        except OAuthUnavailable:
            refused.append(1)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(passed) == 1 and len(refused) == 7


# -- the provider keeps a token that has not expired --------------------------------------


def test_a_live_cached_token_is_used_while_renewing_fails_temporarily() -> None:
    clock = Clock()
    outcomes: list[AccessToken | OAuthError] = [AccessToken("tok-1", clock.now + 600)]

    def acquire(rejected: str | None) -> AccessToken:
        outcome = outcomes.pop(0) if outcomes else None
        if isinstance(outcome, OAuthError):
            raise outcome
        assert outcome is not None
        return outcome

    provider = CachingTokenProvider(acquire, clock=clock)
    assert provider.token() == "tok-1"
    clock.now += 400  # within the margin: renewing is due; the token lives 200 s yet
    down = OAuthUnavailable("down", retry_at=clock.now + 2, diagnosis=_diagnosis(), temporary=True)
    outcomes.append(down)
    assert provider.token() == "tok-1"
    clock.now += 198  # 2 s left: too short for a login
    outcomes.append(down)
    with pytest.raises(OAuthUnavailable):
        provider.token()
    outcomes.append(AccessToken("tok-2", clock.now + 600))
    assert provider.token() == "tok-2"
    provider.invalidate()  # the server refused it: it is not handed out again
    outcomes.append(down)
    with pytest.raises(OAuthUnavailable):
        provider.token()
    outcomes.append(AccessToken("tok-3", clock.now + 600))
    assert provider.token() == "tok-3"
    clock.now += 400
    revoked = OAuthGrantInvalid("revoked", diagnosis=_diagnosis())
    outcomes.append(revoked)  # a permanent error is never hidden behind the cached token
    with pytest.raises(OAuthGrantInvalid):
        provider.token()


def _diagnosis() -> Diagnosis:
    return Diagnosis(Category.SERVER_UNAVAILABLE, "down", ())


# -- msal and google-auth against a stalled or failing fake ---------------------------------


@pytest.fixture
def auth() -> Iterator[FakeAuthorizationServer]:
    with FakeAuthorizationServer(users=(USER,)) as server:
        yield server


def microsoft(auth: FakeAuthorizationServer, **options: object) -> MicrosoftOAuth:
    return MicrosoftOAuth(
        auth.public_client_id,
        store=MemoryTokenStore(),
        authority=auth.authority(),
        instance_discovery=False,
        ca_file=auth.ca_file,
        **options,  # type: ignore[arg-type]
    )


def signed_in(auth: FakeAuthorizationServer, ms: MicrosoftOAuth) -> None:
    code = ms.start_device_flow()
    auth.approve_device_code(code.user_code)
    ms.finish_device_flow("acme", code, timeout=10)


def test_a_blackholed_token_endpoint_costs_one_time_out_then_fails_fast(
    auth: FakeAuthorizationServer,
) -> None:
    ms = microsoft(auth, timeout=1.0, backoff=(1.5, 10.0))
    signed_in(auth, ms)
    provider = ms.token_provider("acme", USER)
    first = provider.token()
    auth.stall_token_endpoint()
    provider.invalidate()  # the mail server refused it: a refresh is needed
    started = time.monotonic()
    with pytest.raises(OAuthError) as caught:
        provider.token()
    assert caught.value.temporary and 0.9 < time.monotonic() - started < 5
    requests_before = auth.token_requests
    for _ in range(5):
        started = time.monotonic()
        with pytest.raises(OAuthUnavailable) as fast:
            provider.token()
        assert time.monotonic() - started < 0.5
        assert fast.value.temporary and fast.value.retry_at > time.time()
        assert auth.host in str(fast.value) and "asked again at" in str(fast.value)
    assert auth.token_requests == requests_before  # nothing reached the endpoint
    auth.release_token_endpoint()
    time.sleep(max(0.0, fast.value.retry_at - time.time()) + 0.1)
    renewed = provider.token()
    assert renewed != first and auth.accepts(USER, renewed)


def test_a_refused_endpoint_and_5xx_open_the_circuit_for_google_too(
    auth: FakeAuthorizationServer,
) -> None:
    store = MemoryTokenStore()
    g = GoogleOAuth(
        auth.google_client_config("web"), store=store, ca_file=auth.ca_file, backoff=(5.0, 10.0)
    )
    request = g.authorization_request("https://app.example.test/oauth/google")
    g.finish_authorization("acme", request, auth.sign_in(request.url))
    provider = g.token_provider("acme")
    provider.token()
    provider.invalidate()
    auth.token_endpoint_status = 503
    with pytest.raises(OAuthError) as caught:  # google-auth's own retry meets the circuit
        provider.token()
    assert caught.value.temporary
    asked = auth.token_requests
    assert asked <= 3
    with pytest.raises(OAuthUnavailable):
        provider.token()
    assert auth.token_requests == asked


def test_a_send_with_a_live_token_goes_on_while_the_endpoint_is_down(
    auth: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_module, "STILL_VALID", 1.0)
    auth.access_token_lifetime = 6  # renewed at half its life: after 3 s
    ms = microsoft(auth, backoff=(30.0, 60.0))
    signed_in(auth, ms)
    provider = ms.token_provider("acme", USER)
    token = provider.token()
    time.sleep(3.2)
    auth.token_endpoint_status = 503
    for _ in range(3):  # renewal fails (then fails fast); the token still lives ~2.8 s
        started = time.monotonic()
        assert provider.token() == token
        assert time.monotonic() - started < 2
    assert auth.accepts(USER, token)
