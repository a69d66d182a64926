"""A circuit per authorization server: after a failure, fail fast for a growing while.

Without it every connection of a batch asks a token endpoint that is down, and a
blackholed one costs the full HTTP time-out each time. After a network failure (refused,
reset, time-out, a 5xx, `temporarily_unavailable`) requests to that host fail at once
with `OAuthUnavailable` until `retry_at`; the window doubles per failure up to a maximum.
When it has passed, one request (the probe) goes through while the others still fail
fast; its success closes the circuit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..diagnosis import Category, Diagnosis
from ..errors import OAuthUnavailable

__all__ = ["DEFAULT_BACKOFF", "Circuits"]

DEFAULT_BACKOFF = (2.0, 120.0)
"""The first window after a failure and the longest one (seconds)."""
MAX_HOSTS = 64  # hosts remembered per session (an adapter talks to one or two)


class _Circuit:
    __slots__ = ("failures", "retry_at")

    def __init__(self) -> None:
        self.failures = 0
        self.retry_at = 0.0


class Circuits:
    """Thread-safe circuits keyed by host, with windows `backoff=(first, maximum)`."""

    def __init__(
        self,
        provider: str,
        backoff: tuple[float, float] = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.time,
    ) -> None:
        first, maximum = backoff
        if not 0 < first <= maximum:
            raise ValueError("backoff is (first, maximum) seconds with 0 < first <= maximum")
        self._provider = provider
        self._first, self._max = first, maximum
        self._clock = clock
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}

    def before(self, host: str) -> None:
        """Raise `OAuthUnavailable` while `host`'s window lasts; when it has passed, let
        this caller probe and hold the others back for another window."""
        with self._lock:
            circuit = self._circuits.get(host)
            if circuit is None or circuit.failures == 0:
                return
            now = self._clock()
            if now >= circuit.retry_at:  # this caller probes; the others keep failing fast
                circuit.retry_at = now + self._window(circuit.failures)
                return
            retry_at = circuit.retry_at
        raise self._unavailable(host, retry_at)

    def failed(self, host: str) -> float:
        """A network failure at `host`: open (or widen) its window; returns `retry_at`."""
        with self._lock:
            circuit = self._circuits.get(host)
            if circuit is None:
                if len(self._circuits) >= MAX_HOSTS:
                    self._circuits.pop(next(iter(self._circuits)))
                circuit = self._circuits[host] = _Circuit()
            circuit.failures += 1
            circuit.retry_at = self._clock() + self._window(circuit.failures)
            return circuit.retry_at

    def succeeded(self, host: str) -> None:
        """`host` answered: close its circuit."""
        with self._lock:
            self._circuits.pop(host, None)

    def _window(self, failures: int) -> float:
        return min(self._max, self._first * 2.0 ** min(failures - 1, 30))

    def _unavailable(self, host: str, retry_at: float) -> OAuthUnavailable:
        seconds = max(0.0, retry_at - self._clock())
        when = time.strftime("%H:%M:%S UTC", time.gmtime(retry_at))
        return OAuthUnavailable(
            f"the authorization server {host} failed moments ago; "
            f"it is asked again at {when} (in {seconds:.0f} s)",
            retry_at=retry_at,
            diagnosis=Diagnosis(
                Category.SERVER_UNAVAILABLE,
                "The sign-in service could not be reached to renew the email login.",
                (f"mailbridge tries again in {seconds:.0f} seconds; nothing needs to be done.",),
            ),
            provider=self._provider,
            error="temporarily_unavailable",
            temporary=True,
        )
