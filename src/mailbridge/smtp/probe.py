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


def probe_smtp(
    settings: SmtpSettings,
    *,
    try_alternative: bool = True,
    observer: Callable[[Step], None] | None = None,
) -> ConnectionReport:
    """Open a connection step by step, log in, say QUIT, and report what happened.

    `observer` is called with each step as it ends (a CLI shows progress with it).
    """
    steps: list[Step] = []

    def record(step: Step) -> None:
        steps.append(step)
        if observer is not None:
            observer(step)

    try:
        connection = SmtpConnection.open(
            settings,
            observer=record,
            greeting_timeout=min(settings.command_timeout, PROBE_GREETING_TIMEOUT),
        )
    except DeliveryError as exc:
        failed = steps[-1].name if steps else ""
        diagnosis = exc.diagnosis
        alternative = None
        other = alternative_security(settings, failed, diagnosis) if try_alternative else None
        if other is not None:
            candidate = attrs.evolve(settings, security=other)
            result = probe_smtp(candidate, try_alternative=False, observer=observer)
            if reached_smtp_over_tls(result, other):
                alternative = candidate
                diagnosis = use_alternative(settings, other, result)
        return ConnectionReport(False, tuple(steps), diagnosis, exc, alternative)
    extensions = dict(connection.extensions)
    connection.quit()
    return ConnectionReport(True, tuple(steps), extensions=extensions)
