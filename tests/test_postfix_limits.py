"""Postfix limiting messages: refusals are final, nothing is lost silently or sent twice.

Postfix has no per-connection message limit (Exim's smtp_accept_max_per_connection
is tested with FakeSmtpServer.messages_per_connection). Its closest setting,
`smtpd_client_message_rate_limit`, counts messages per client across connections
per `anvil_rate_time_unit` and answers MAIL with 450 while keeping the session.
"""

from __future__ import annotations

import collections
import email
import email.policy
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge import DeliveryClient, DocumentEmail, SenderRefused, SmtpSettings
from mailbridge.testing.realservers import RealMailServers, availability

from .conftest import ALICE, ALICE_PASSWORD, require

pytestmark = pytest.mark.realserver

RATE = 10  # messages per client and minute


class _RateLimitedServers(RealMailServers):
    def _postfix_main_cf(self) -> str:
        return super()._postfix_main_cf() + (
            f"smtpd_client_message_rate_limit = {RATE}\n"
            "smtpd_client_event_limit_exceptions =\n"  # loopback is exempt by default
        )


@pytest.fixture
def limited_postfix() -> Iterator[RealMailServers]:
    require(availability(), "real-server")
    directory = Path(tempfile.mkdtemp(prefix="mailbridge-ratelimited-"))
    try:
        with _RateLimitedServers(directory, users={ALICE: ALICE_PASSWORD}) as servers:
            yield servers
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_message_rate_limit_refuses_the_rest_once_with_chunking(
    limited_postfix: RealMailServers,
) -> None:
    settings = SmtpSettings(
        limited_postfix.host, limited_postfix.submission_port, "starttls", username=ALICE,
        password=ALICE_PASSWORD, ca_file=limited_postfix.ca_file, command_timeout=10.0,
    )  # fmt: skip
    emails = [DocumentEmail(to=ALICE, subject=f"Invoice {n}", body="b") for n in range(30)]
    with DeliveryClient.own_smtp(ALICE, settings) as client:
        outcomes = list(client.send_many(emails))
    sent = sorted(f"Invoice {o.index}" for o in outcomes if o.ok)
    refused = [o.error for o in outcomes if not o.ok]
    assert len(sent) == RATE
    assert all(isinstance(error, SenderRefused) and error.temporary for error in refused)
    assert all(e.reply is not None and e.reply.code == 450 for e in refused)  # type: ignore[union-attr]
    arrived = limited_postfix.wait_for_messages(ALICE, RATE)
    subjects = collections.Counter(
        str(email.message_from_bytes(data, policy=email.policy.default)["Subject"])
        for data in arrived
    )
    assert subjects == collections.Counter(sent)  # every success arrived, each once
