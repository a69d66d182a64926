"""The Celery app module of the outbox's Celery tests, imported by real ``celery worker`` processes.

Configured by the environment the test gives the workers: ``BROKER`` (Redis URL),
``OUTBOX_URL``, ``SMTP_PORT`` and ``SMTP_CA`` (the test's FakeSmtpServer), ``LEASE`` and
``VISIBILITY_TIMEOUT`` (seconds). An application's module looks the same, minus the kill hook.

The kill hook is test code, not the library's: where the test left a ticket file named after a
kill point in ``KILL_DIR``, the first process to reach that point takes the ticket (an atomic
rename) and kills itself with SIGKILL: only its pool process (ticket text ``child``) or the
whole worker, main process and pool (``worker``). Points: ``prerun`` (the task started, nothing
claimed), ``claimed`` (the claim is committed, no byte sent), ``after_250`` (the server
accepted the message, the outbox has not recorded it).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import task_prerun

from mailbridge import DeliveryClient, SmtpSettings
from mailbridge.composer import PreparedMessage
from mailbridge.outbox.celery import register
from mailbridge.smtp.transport import SmtpTransport
from mailbridge.testing.pytest_plugin import FAKE_PASSWORD, FAKE_USER

app = Celery("outbox_celery_tests", broker=os.environ["BROKER"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        # Redis hands an unacknowledged message to another worker after this many seconds.
        "visibility_timeout": float(os.environ["VISIBILITY_TIMEOUT"]),
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    worker_prefetch_multiplier=1,
)


def kill_point(point: str) -> None:
    """The test-only hook: die here if the test left a ticket for this point."""
    directory = os.environ.get("KILL_DIR")
    if not directory:
        return
    ticket = Path(directory, point)
    taken = ticket.with_name(f"{point}.taken-by-{os.getpid()}")
    try:
        ticket.rename(taken)
    except OSError:
        return  # no ticket, or another process took it first
    if taken.read_text().strip() == "worker":
        os.killpg(0, signal.SIGKILL)  # the worker's main process and its whole pool
    os.kill(os.getpid(), signal.SIGKILL)


class HookedTransport(SmtpTransport):
    """SMTP to the test's server, with the kill points around the transaction."""

    def deliver(self, message: PreparedMessage) -> Any:
        kill_point("claimed")
        transaction = super().deliver(message)
        kill_point("after_250")
        return transaction


_clients: dict[str, DeliveryClient] = {}


def resolve_client(tenant: str) -> DeliveryClient:
    """The tenant's client, made once per process (the task does not close clients)."""
    client = _clients.get(tenant)
    if client is None:
        settings = SmtpSettings(
            "127.0.0.1", int(os.environ["SMTP_PORT"]), "starttls", username=FAKE_USER,
            password=FAKE_PASSWORD, ca_file=Path(os.environ["SMTP_CA"]), command_timeout=10.0,
        )  # fmt: skip
        client = DeliveryClient.own_smtp(
            f"{tenant}@example.test", settings, transport=HookedTransport(settings)
        )
        _clients[tenant] = client
    return client


tasks = register(app, os.environ["OUTBOX_URL"], resolve_client, lease=float(os.environ["LEASE"]))


@task_prerun.connect
def _before_the_task(**_: Any) -> None:
    kill_point("prerun")
