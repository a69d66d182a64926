"""Sending many messages at once: bounded concurrency, results as they complete."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import attrs

from .errors import ConfigurationError
from .smtp.pool import DEFAULT_CONCURRENCY

if TYPE_CHECKING:
    from ._async_client import AsyncDeliveryClient
    from ._client import DeliveryClient, SendResult
    from ._message import DocumentEmail
    from .composer import PreparedMessage

__all__ = ["BulkOutcome", "send_many"]


@attrs.frozen
class BulkOutcome:
    """What happened to one message of a batch: its `result`, or the `error` it met.

    `index` is its position in the input, so outcomes (which arrive in the order
    they complete) can be matched to what was sent.
    """

    index: int
    client: DeliveryClient | AsyncDeliveryClient = attrs.field(repr=False)
    email: DocumentEmail | PreparedMessage = attrs.field(repr=False)
    result: SendResult | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """True when the message was sent (some recipients may still have refused it)."""
        return self.result is not None


def _send(
    index: int, client: DeliveryClient, email: DocumentEmail | PreparedMessage
) -> BulkOutcome:
    try:
        return BulkOutcome(index, client, email, result=client.send(email))
    except Exception as exc:
        return BulkOutcome(index, client, email, error=exc)


def send_many(
    messages: Iterable[tuple[DeliveryClient, DocumentEmail | PreparedMessage]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Iterator[BulkOutcome]:
    """Send (client, email) pairs — across tenants too — `concurrency` at a time.

    The default (12) fills a default `ConnectionPool`: 4 connections x 3 messages in flight.

    Outcomes are yielded as messages complete (a progress bar can follow them);
    the input is read lazily and at most twice `concurrency` messages are in
    flight, so memory does not grow with the batch. How many connections each
    server gets is bounded by its client's connection pool. If you stop
    iterating early, sends not yet started are dropped and those already
    running finish without their outcome being reported; if the input raises,
    the outcomes in flight are yielded first.
    """
    if concurrency < 1:
        raise ConfigurationError("concurrency", "must be at least 1")
    pending: set[concurrent.futures.Future[BulkOutcome]] = set()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)
    failure: BaseException | None = None
    try:
        iterator = enumerate(messages)
        while True:
            try:
                index, (client, email) = next(iterator)
            except StopIteration:
                break
            except Exception as exc:  # the input failed: report what is in flight, then raise
                failure = exc
                break
            pending.add(pool.submit(_send, index, client, email))
            if len(pending) >= 2 * concurrency:
                done, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                yield from (future.result() for future in done)
        while pending:
            done, pending = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            yield from (future.result() for future in done)
    finally:
        # Stopped early: queued sends that have not started are dropped; the ones
        # already running finish (their messages may have gone out).
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure
