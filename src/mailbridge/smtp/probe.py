"""The connection test behind the *Test connection* button."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .._results import ConnectionReport, Step
from ..diagnosis import Category, Diagnosis
from ..diagnostics import security_label
from ..errors import DeliveryError
from ..settings import Security, SmtpSettings
from .connection import SmtpConnection

__all__ = ["ConnectionReport", "probe_smtp"]

PROBE_GREETING_TIMEOUT = 10.0


def reached_smtp_over_tls(report: ConnectionReport, security: Security) -> bool:
    names = [step.name for step in report.steps if step.ok]
    return "ehlo" in names and (security != Security.STARTTLS or "starttls" in names)


def alternative_security(
    settings: SmtpSettings, failed: str, diagnosis: Diagnosis
) -> Security | None:
    """The other TLS mode worth a second probe after a failure at step `failed`, if any."""
    if failed in ("tls", "greeting") or diagnosis.category == Category.EXPECTED_PLAINTEXT:
        implicit = settings.security == Security.IMPLICIT_TLS
        return Security.STARTTLS if implicit else Security.IMPLICIT_TLS
    return None


def use_alternative(settings: SmtpSettings, other: Security, result: ConnectionReport) -> Diagnosis:
    """The diagnosis when a probe with the `other` TLS mode reached the server (`result`)."""
    label = security_label(other)
    return Diagnosis(
        Category.EXPECTED_PLAINTEXT
        if other == Security.STARTTLS
        else Category.EXPECTED_IMPLICIT_TLS,
        f"The server on port {settings.port} uses {label}, not "
        f"{security_label(settings.security)}: choose {label}.",
        (
            f"A test with {label} on port {settings.port} "
            + (
                "worked."
                if result.ok
                else f"connected, then: {result.diagnosis and result.diagnosis.summary}"
            ),
        ),
    )


class Probe:
    """The bookkeeping of one connection test, I/O aside (shared with `_async_probe.py`):
    the steps seen, and what a failure or a success reports."""

    def __init__(self, settings: SmtpSettings, observer: Callable[[Step], None] | None) -> None:
        self.settings = settings
        self.observer = observer
        self.steps: list[Step] = []
        self.greeting_timeout = min(settings.command_timeout, PROBE_GREETING_TIMEOUT)

    def record(self, step: Step) -> None:
        self.steps.append(step)
        if self.observer is not None:
            self.observer(step)

    def alternative(self, exc: DeliveryError, try_alternative: bool) -> SmtpSettings | None:
        """The settings with the other TLS mode, to probe after `exc`, if worth it."""
        failed = self.steps[-1].name if self.steps else ""
        other = alternative_security(self.settings, failed, exc.diagnosis)
        if not try_alternative or other is None:
            return None
        return attrs.evolve(self.settings, security=other)

    def failed(
        self, exc: DeliveryError, tried: tuple[SmtpSettings, ConnectionReport] | None = None
    ) -> ConnectionReport:
        """The report after `exc`; `tried` is the other TLS mode's settings and probe, if run."""
        diagnosis = exc.diagnosis
        alternative = None
        if tried is not None and reached_smtp_over_tls(tried[1], tried[0].security):
            alternative, result = tried
            diagnosis = use_alternative(self.settings, alternative.security, result)
        return ConnectionReport(False, tuple(self.steps), diagnosis, exc, alternative)

    def succeeded(self, extensions: dict[str, str]) -> ConnectionReport:
        return ConnectionReport(True, tuple(self.steps), extensions=dict(extensions))


def probe_smtp(
    settings: SmtpSettings,
    *,
    try_alternative: bool = True,
    observer: Callable[[Step], None] | None = None,
) -> ConnectionReport:
    """Open a connection step by step, log in, say QUIT, and report what happened.

    `observer` is called with each step as it ends (a CLI shows progress with it).
    """
    probe = Probe(settings, observer)
    try:
        connection = SmtpConnection.open(
            settings, observer=probe.record, greeting_timeout=probe.greeting_timeout
        )
    except DeliveryError as exc:
        candidate = probe.alternative(exc, try_alternative)
        if candidate is None:
            return probe.failed(exc)
        result = probe_smtp(candidate, try_alternative=False, observer=observer)
        return probe.failed(exc, (candidate, result))
    report = probe.succeeded(connection.extensions)
    connection.quit()
    return report
