"""`EmailBackend`: Django's `send_mail()` and `EmailMessage.send()` through mailbridge."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from .._bulk import send_many
from .._client import DeliveryClient, SendResult
from ..composer import PreparedMessage
from ..errors import ConfigurationError, MailbridgeError
from ..smtp.pool import DEFAULT_CONCURRENCY
from ._clients import Tenant, client_for, leased_client
from ._convert import prepare_django_message
from ._options import OPTION_NAMES, Options, load_options
from ._outbox_mode import enqueue_on_commit, outbox_at
from ._status import failed_status, queued_status, sent_status

__all__ = ["EmailBackend", "client_of", "probe_message", "resolved"]

DEFAULT_ALIAS = "default"


def resolved(
    message: Any, options: Options, alias: str = DEFAULT_ALIAS, leases: ExitStack | None = None
) -> tuple[str | None, DeliveryClient]:
    """The tenant's key (None when the resolver gave a client of its own) and its client,
    a pooled one held open until `leases` closes when given."""
    found = options.resolver(message)
    if isinstance(found, Tenant):
        if leases is not None:
            return found.key, leases.enter_context(leased_client(alias, found, options.max_clients))
        return found.key, client_for(alias, found, options.max_clients)
    if isinstance(found, DeliveryClient):
        return None, found
    raise ConfigurationError(
        "TENANT_RESOLVER",
        f"returned {type(found).__name__} for the message {message.subject!r}; "
        "return a mailbridge.django.Tenant or a DeliveryClient",
    )


def client_of(message: Any, options: Options, alias: str = DEFAULT_ALIAS) -> DeliveryClient:
    """The tenant's `DeliveryClient` for `message`, as the resolver names it."""
    return resolved(message, options, alias)[1]


def probe_message(tenant: str) -> Any:
    """A message whose tenant is `tenant`, for asking the resolver about a tenant alone."""
    probe = EmailMessage(subject=f"mailbridge: the account of {tenant}")
    probe.tenant = tenant
    return probe


def _outcomes(
    pairs: list[tuple[DeliveryClient, PreparedMessage]],
) -> Iterator[tuple[int, SendResult | None, Exception | None]]:
    """(index, result, error) of each send: one message in this thread, more concurrently
    (each tenant's connections bounded by its client's pool)."""
    if not pairs:
        return
    if len(pairs) == 1:
        client, prepared = pairs[0]
        try:
            result = client.send(prepared)
        except MailbridgeError as exc:
            yield 0, None, exc
            return
        yield 0, result, None
        return
    for outcome in send_many(pairs, concurrency=min(len(pairs), DEFAULT_CONCURRENCY)):
        yield outcome.index, outcome.result, outcome.error


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """Sends each message through its tenant's `DeliveryClient` (own SMTP, relay or SPF).

    Options (keyword arguments, a MAILERS entry's OPTIONS, or `settings.MAILBRIDGE` in
    capitals): `tenant_resolver`, `tenant_header`, `max_clients`. Clients are pooled per
    process, so connections outlive the backend Django makes for each call.
    """

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        overrides = {name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs}
        super().__init__(**kwargs)  # Django 6.1: `alias`, and refuses unknown options
        self.fail_silently = fail_silently
        self.mailer_alias = getattr(self, "alias", None) or DEFAULT_ALIAS
        self._overrides = overrides
        self._options: Options | None = None

    @property
    def options(self) -> Options:
        """The options in force (read on first use: settings may change in tests)."""
        if self._options is None:
            self._options = load_options(self._overrides)
        return self._options

    def open(self) -> bool:
        """Nothing to open: each tenant's connections come from its pooled client."""
        return False

    def close(self) -> None:
        """Nothing to close: the pooled clients keep their connections for the next call."""

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Send the messages; returns how many were sent (to at least one recipient).

        Each message gets `mailbridge_result` (a `SendStatus`). Every message is
        attempted; then, unless `fail_silently`, the first error is raised.
        """
        if not email_messages:
            return 0
        with ExitStack() as leases:  # the pooled clients stay open until every send is done
            return self._send_all(email_messages, leases)

    def _send_all(self, email_messages: Sequence[Any], leases: ExitStack) -> int:
        errors: list[MailbridgeError] = []
        batch: list[tuple[Any, DeliveryClient, PreparedMessage]] = []
        queued = 0
        for message in email_messages:
            if not message.recipients():
                continue
            try:
                tenant, client = resolved(message, self.options, self.mailer_alias, leases)
                prepared = prepare_django_message(
                    client,
                    message,
                    tenant_header=self.options.tenant_header,
                    default_from=settings.DEFAULT_FROM_EMAIL,
                )
                if self.options.outbox is not None:
                    self._queue(message, tenant, client, prepared)
                    queued += 1
                    continue
            except MailbridgeError as exc:
                message.mailbridge_result = failed_status(exc, message.recipients(), None)
                errors.append(exc)
                continue
            batch.append((message, client, prepared))
        sent = queued
        for index, result, error in _outcomes([(client, prep) for _, client, prep in batch]):
            message, _, prepared = batch[index]
            if result is not None:
                message.mailbridge_result = sent_status(result)
                sent += 1
            elif isinstance(error, MailbridgeError):
                message.mailbridge_result = failed_status(
                    error, prepared.recipients, prepared.message_id
                )
                errors.append(error)
            elif error is not None:
                raise error  # a bug, never disguised as a delivery status
        if errors and not self.fail_silently:
            raise errors[0]
        return sent

    def _queue(
        self, message: Any, tenant: str | None, client: DeliveryClient, prepared: PreparedMessage
    ) -> None:
        """Outbox mode: hand the message to the outbox on commit (see `_outbox_mode`)."""
        if tenant is None:
            raise ConfigurationError(
                "TENANT_RESOLVER",
                "in outbox mode the resolver must return a Tenant: the outbox stores its key "
                "and the workers build the client again from it",
            )
        message.mailbridge_result = queued_status(prepared.recipients, prepared.message_id)
        enqueue_on_commit(
            message,
            tenant,
            client,
            prepared,
            outbox=outbox_at(self.options.outbox),
            dispatch=self.options.dispatch,
            database=self.options.database,
        )
