from __future__ import annotations

import datetime as dt
import pickle

import pytest

from mailbridge import ConfigurationError, Secret
from mailbridge._verification import issue_token, verification_email, verify_token
from mailbridge.errors import TokenExpired, TokenInvalid, TokenMismatch

SECRET = Secret("0123456789abcdef-app-secret")
T0 = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)


def _at(moment: dt.datetime):  # type: ignore[no-untyped-def]
    return lambda: moment


def test_round_trip() -> None:
    token = issue_token("Billing@Acme.Example", SECRET, clock=_at(T0))
    verified = verify_token(
        token, SECRET, address="Billing@acme.example", clock=_at(T0 + dt.timedelta(hours=1))
    )
    assert verified.address == "Billing@acme.example"
    assert verified.expires_at == T0 + dt.timedelta(days=2)
    assert all(c.isalnum() or c in "-_." for c in token)  # fits in a URL as it is


def test_expired() -> None:
    token = issue_token("a@acme.example", SECRET, valid_for=dt.timedelta(hours=1), clock=_at(T0))
    with pytest.raises(TokenExpired) as info:
        verify_token(token, SECRET, clock=_at(T0 + dt.timedelta(hours=1)))
    assert info.value.expired_at == T0 + dt.timedelta(hours=1)
    assert pickle.loads(pickle.dumps(info.value)).expired_at == info.value.expired_at


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],
        lambda t: "x" + t,
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: "e30." + t.split(".")[1],
    ],
)
def test_tampered(mutate) -> None:  # type: ignore[no-untyped-def]
    token = issue_token("a@acme.example", SECRET, clock=_at(T0))
    with pytest.raises(TokenInvalid):
        verify_token(mutate(token), SECRET, clock=_at(T0))


def test_other_secret_and_other_address() -> None:
    token = issue_token("a@acme.example", SECRET, clock=_at(T0))
    with pytest.raises(TokenInvalid):
        verify_token(token, "another-secret-of-enough-length", clock=_at(T0))
    with pytest.raises(TokenMismatch):
        verify_token(token, SECRET, address="b@acme.example", clock=_at(T0))


def test_short_secret_refused() -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        issue_token("a@acme.example", "short")


def test_verification_email() -> None:
    email = verification_email(
        "a@acme.example",
        "https://app.example/verify?t=abc",
        app_name="Example App",
        tenant_name="Acme GmbH",
    )
    assert "https://app.example/verify?t=abc" in email.rendered_body()
    assert email.rendered_subject() == "Please confirm your email address for Example App"
    assert [m.address for m in email.to] == ["a@acme.example"]


def test_impossible_dates_and_bad_validity() -> None:
    future = issue_token("a@acme.example", SECRET, clock=_at(T0 + dt.timedelta(days=365)))
    with pytest.raises(TokenInvalid):
        verify_token(future, SECRET, clock=_at(T0))
    with pytest.raises(ConfigurationError, match="valid_for"):
        issue_token("a@acme.example", SECRET, valid_for=dt.timedelta(days=10_000))
    with pytest.raises(TokenInvalid):
        verify_token(None, SECRET)  # type: ignore[arg-type]
