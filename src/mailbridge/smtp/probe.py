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


def _reached_smtp_over_tls(report: ConnectionReport, security: Security) -> bool:
    names = [step.name for step in report.steps if step.ok]
    return "ehlo" in names and (security != Security.STARTTLS or "starttls" in names)


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
        if try_alternative and (
            failed in ("tls", "greeting") or diagnosis.category == Category.EXPECTED_PLAINTEXT
        ):
            other = (
                Security.STARTTLS
                if settings.security == Security.IMPLICIT_TLS
                else (Security.IMPLICIT_TLS)
            )
            candidate = attrs.evolve(settings, security=other)
            result = probe_smtp(candidate, try_alternative=False, observer=observer)
            if _reached_smtp_over_tls(result, other):
                alternative = candidate
                label = security_label(other)
                diagnosis = Diagnosis(
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
        return ConnectionReport(False, tuple(steps), diagnosis, exc, alternative)
    extensions = dict(connection.extensions)
    connection.quit()
    return ConnectionReport(True, tuple(steps), extensions=extensions)
